"""The MAE pre-training bundle end to end: train (tiny), export, and fine-tuning picks the encoder up."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from shared.bundles import check_metadata
from shared.checkpoints.weights import load_weights
from shared.data.synthetic.dataset import make_dataset
from shared.io.datalist import read_split
from shared.networks.resenc_unet import ResEncUNet
from shared.ssl.inspection import plan_from_manifest, reconstruct_scans
from tests.bundles._pretraining import (REPOSITORY, TINY, assert_encoder_export,
                                        assert_fine_tuning_takes_the_whole_encoder, config_list, run_bundle)

CONFIGS = REPOSITORY / "bundles" / "resenc_mae_pretrain" / "configs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mae")
    counts = {"training": 0, "validation": 0, "test": 0, "unlabelled": 2}
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    tiny = ["--dataset_dir", str(root / "data"), "--output_dir", str(root / "out"), "--encoder", json.dumps(TINY),
            "--patch_size", "[32,32,32]"]
    run_bundle("run", "--config_file", config_list(CONFIGS, "train.json", "quick.json"), *tiny,
               "--iterations_per_epoch", "3", "--epochs", "1", "--preview_every", "2", cwd=root)
    run_bundle("run", "--config_file", config_list(CONFIGS, "inference.json", "quick.json"), *tiny,
               "--model_dir", str(root / "out"), "--prediction_dir", str(root / "reconstructions"), cwd=root)
    return root


def test_exported_encoder_loads_safely_and_matches_its_manifest(trained):
    assert_encoder_export(trained / "out", "mae", iterations=3)


def test_model_loads_into_network_def_and_logs_hold_previews(trained):
    load_weights(ResEncUNet(1, 1, encoder_spec=TINY), trained / "out" / "model.pt")
    assert list((trained / "out" / "checkpoints").glob("last_checkpoint_3.pt"))
    assert list((trained / "out" / "logs").glob("*.previews"))


def test_fine_tuning_takes_the_whole_encoder(trained):
    assert_fine_tuning_takes_the_whole_encoder(trained / "out")


def test_inference_writes_reconstructions(trained, tmp_path):
    results = json.loads((trained / "reconstructions" / "reconstructions.json").read_text())
    assert [result["case"] for result in results] == ["lung_ct_un_000", "lung_ct_un_001"]
    assert all(set(result["files"]) == {"input", "masked", "reconstruction", "mask"} for result in results)
    assert all(Path(path).is_file() for result in results for path in result["files"].values())
    # the infer workflow (dataset → ScanEvaluator → writer) gives what the plain Python path gives
    network = load_weights(ResEncUNet(1, 1, encoder_spec=TINY), trained / "out" / "model.pt")
    images = [entry["image"] for entry in read_split(trained / "data" / "datalist.json", "unlabelled")]
    expected = reconstruct_scans(network, images, tmp_path, plan=plan_from_manifest(trained / "out"),
                                 patch_size=[32, 32, 32], block_size=16, mask_ratio=0.75, seed=0)
    assert [result["masked_mse"] for result in results] == pytest.approx(
        [result["masked_mse"] for result in expected], rel=1e-5)
    for result, reference in zip(results, expected):
        for name in ("masked", "reconstruction", "mask"):
            np.testing.assert_allclose(nib.load(result["files"][name]).get_fdata(),
                                       nib.load(reference["files"][name]).get_fdata(), atol=1e-5)


def test_network_in_out_and_metadata(tmp_path):
    check_metadata(CONFIGS / "metadata.json")
    run_bundle("verify_net_in_out", "network_def", "--meta_file", str(CONFIGS / "metadata.json"),
               "--config_file", config_list(CONFIGS, "train.json", "quick.json"), cwd=tmp_path)
