"""The SparK-S3D pre-training bundle end to end: train (tiny), resume exactly, export, fine-tuning takes the
encoder, inference reconstructs masked scans through the sparse path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shared.bundles import check_metadata
from shared.checkpoints.weights import load_weights
from shared.networks.resenc_unet import ResEncUNet
from shared.ssl.previews import TAG
from shared.ssl.spark import SparKPretraining, SparKReconstructor
from tests.bundles._pretraining import (REPOSITORY, TINY, assert_encoder_export,
                                        assert_fine_tuning_takes_the_whole_encoder,
                                        assert_resumed_like_the_straight_run, preview_steps, train_and_infer_tiny)

CONFIGS = REPOSITORY / "bundles" / "resenc_spark_pretrain" / "configs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_and_infer_tiny(CONFIGS, tmp_path_factory.mktemp("spark"), "reconstructions")


def test_exported_encoder_is_the_dense_encoder_with_its_manifest(trained):
    assert_encoder_export(trained / "out", "spark")


def test_a_run_stopped_and_started_again_ends_with_the_same_weights(trained):
    assert_resumed_like_the_straight_run(trained, TAG)


def test_model_holds_the_densifying_layers_and_logs_hold_previews(trained):
    state = torch.load(trained / "out" / "model.pt", weights_only=True)
    assert any(key.startswith("mask_tokens.") for key in state) and any(key.startswith("densify_") for key in state)
    load_weights(SparKPretraining(ResEncUNet(1, 1, encoder_spec=TINY), seed=0), trained / "out" / "model.pt")
    assert preview_steps(trained / "out" / "logs", TAG) == [1, 2, 4]


def test_fine_tuning_takes_the_whole_encoder(trained):
    assert_fine_tuning_takes_the_whole_encoder(trained / "out")


def test_inference_reconstructs_from_the_visible_blocks_only(trained):
    results = json.loads((trained / "reconstructions" / "reconstructions.json").read_text())
    assert [result["case"] for result in results] == ["lung_ct_un_000", "lung_ct_un_001"]
    assert all(Path(path).is_file() for result in results for path in result["files"].values())
    # the inference network reads zero blocks as hidden: changing a hidden block's content (to zero it is
    # how the scan was masked) changes nothing, and the output equals the training path with that mask
    network = load_weights(SparKReconstructor(ResEncUNet(1, 1, encoder_spec=TINY), block_size=16),
                           trained / "out" / "model.pt").eval()
    images = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    hidden = torch.zeros(1, 1, 32, 32, 32, dtype=torch.bool)
    hidden[..., :16, :16, :16] = hidden[..., 16:, 16:, :16] = True
    with torch.no_grad():
        reconstruction = network(images.masked_fill(hidden, 0.0))
        expected = network.reconstruct(images, hidden)
    torch.testing.assert_close(reconstruction, expected, rtol=0, atol=0)


def test_metadata():
    check_metadata(CONFIGS / "metadata.json")
