"""The Models Genesis pre-training bundle end to end: train (tiny) on the JSON-listed corruptions, resume
exactly, export, fine-tuning takes the encoder, inference restores corrupted scans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from shared.bundles import check_metadata
from shared.checkpoints.weights import load_weights
from shared.networks.resenc_unet import ResEncUNet
from shared.ssl import models_genesis
from shared.ssl.inspection import plan_from_manifest
from shared.ssl.models_genesis import GENESIS_TAG
from tests.bundles._pretraining import (REPOSITORY, TINY, assert_encoder_export,
                                        assert_fine_tuning_takes_the_whole_encoder,
                                        assert_resumed_like_the_straight_run, preview_steps, train_and_infer_tiny)

CONFIGS = REPOSITORY / "bundles" / "resenc_models_genesis_pretrain" / "configs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_and_infer_tiny(CONFIGS, tmp_path_factory.mktemp("genesis"), "restorations")


def test_the_corruptions_are_the_papers_in_order_after_the_target_copy():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    corruptions = parser.get_parsed_content("corruptions")
    assert [type(t).__name__ for t in corruptions] == ["RandGenesisFlipd", "CopyItemsd", "RandLocalShuffled",
                                                      "RandBezierIntensityd", "RandInOutPaintd"]
    assert [getattr(t, "prob", None) for t in corruptions] == [0.4, None, 0.5, 0.9, 0.9]
    assert corruptions[4].inpaint_prob == 0.2 and corruptions[3].invert_prob == 0.5
    assert parser["train"]["preprocessing"]["transforms"].endswith("@corruptions")


def test_the_step_passes_the_clean_target():
    batch = {"image": torch.ones(2, 1, 4, 4, 4), "target": [torch.zeros(1, 4, 4, 4)] * 2}  # collated as a list
    images, target = models_genesis.prepare_genesis_batch(batch, "cpu")
    assert torch.equal(images, batch["image"]) and target.shape == (2, 1, 4, 4, 4) and not target.any()
    with pytest.raises(KeyError, match="CopyItemsd"):
        models_genesis.prepare_genesis_batch({"image": batch["image"]}, "cpu")


def test_exported_encoder_and_its_manifest(trained):
    assert_encoder_export(trained / "out", "models_genesis")
    manifest = json.loads((trained / "out" / "encoder.json").read_text())
    assert "RandLocalShuffled" in json.dumps(manifest["method_settings"]["augmentation"])


def test_a_run_stopped_and_started_again_ends_with_the_same_weights(trained):
    assert_resumed_like_the_straight_run(trained, GENESIS_TAG)


def test_model_loads_into_network_def_and_logs_hold_previews(trained):
    load_weights(ResEncUNet(1, 1, encoder_spec=TINY), trained / "out" / "model.pt")
    assert preview_steps(trained / "out" / "logs", GENESIS_TAG) == [1, 2, 4]


def test_fine_tuning_takes_the_whole_encoder(trained):
    assert_fine_tuning_takes_the_whole_encoder(trained / "out")


def test_inference_writes_restorations(trained):
    results = json.loads((trained / "restorations" / "restorations.json").read_text())
    assert [result["case"] for result in results] == ["lung_ct_un_000", "lung_ct_un_001"]
    assert all(Path(path).is_file() for result in results for path in result["files"].values())
    assert all(result["mse"] >= 0 and result["corrupted_mse"] >= 0 for result in results)
    # the plain-Python path draws the same corruptions and restores the same way
    images = [entry["image"] for entry in json.loads((trained / "data" / "datalist.json").read_text())["unlabelled"]]
    images = [image if Path(image).is_absolute() else str(trained / "data" / image) for image in images]
    network = load_weights(ResEncUNet(1, 1, encoder_spec=TINY), trained / "out" / "model.pt")
    again = models_genesis.restore_scans(network, images, trained / "again", plan=plan_from_manifest(trained / "out"),
                                         patch_size=[32, 32, 32])
    for first, second in zip(results, again):
        assert first["case"] == second["case"]
        assert first["mse"] == pytest.approx(second["mse"]) and first["corrupted_mse"] == second["corrupted_mse"]


def test_metadata():
    check_metadata(CONFIGS / "metadata.json")
