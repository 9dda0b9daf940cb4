"""The two Deformable DETR bundles end to end, through ``python -m monai.bundle`` from another folder.

The plain-encoder bundle trains from scratch (the number of queries planned from the training boxes and
read by ``network_def``), resumes, evaluates, and infers with ``inference.json`` alone (the network
rebuilt from the model plan); each bundle fine-tunes from an exported encoder of its kind (plain, ResEnc). The
Model-Zoo checks (metadata, ``verify_net_in_out``, export) run in test_model_zoo_checks.py. Sizes: tiny
encoder, 2 levels, a 32-wide 1-layer transformer, 32³ patches, 2 iterations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.bundles import build_network
from shared.checkpoints.weights import load_weights
from shared.data.cache import read_case
from shared.data.synthetic.dataset import make_dataset
from shared.detectors.deformable_detr import objects_per_patch, plan_queries
from tests.bundles._detector_bundles import fine_tune_from_exported_encoder
from tests.bundles._pretraining import REPOSITORY, TINY, config_list, run_bundle

PLAIN = REPOSITORY / "bundles" / "deformable_detr_detection" / "configs"
RESENC = REPOSITORY / "bundles" / "resenc_deformable_detr_detection" / "configs"
TRANSFORMER = {"num_levels": 2, "hidden_channels": 32, "num_heads": 2, "num_points": 1, "encoder_layers": 1,
               "decoder_layers": 1, "feedforward_channels": 32, "minimum_queries": 4}
TRAIN = ["--patch_size", "[32,32,32]", "--batch_size", "2", "--iterations_per_epoch", "2", "--epochs", "1",
         "--checkpoint_every", "2"]


def _tiny(encoder_name: str) -> list[str]:
    sizes = {"encoder": {"name": encoder_name, "preset": "tiny"}, **TRANSFORMER}
    return [item for key, value in sizes.items() for item in (f"--{key}", json.dumps(value))]


def _planned_network(out: Path):
    """The network the model plan records (what inference rebuilds), loaded with the trained weights."""
    spec = json.loads((out / "model_plan.json").read_text())["network"]
    return load_weights(build_network(spec["target"], **spec["arguments"]), out / "model.pt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Data and a 2-iteration training run of the plain bundle from scratch, run from ``root/elsewhere``."""
    root = tmp_path_factory.mktemp("detr")
    counts = {"training": 3, "validation": 1, "test": 1, "unlabelled": 0}
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    (root / "elsewhere").mkdir()
    run_bundle("run", "--config_file", config_list(PLAIN, "train.json", "quick.json"), "--dataset_dir",
               str(root / "data"), "--output_dir", str(root / "out"), *_tiny("plain"), *TRAIN, cwd=root / "elsewhere")
    return root


def test_training_plans_the_queries_and_records_the_network(trained):
    out = trained / "out"
    plan = json.loads((out / "model_plan.json").read_text())
    # the plan: objects per 32³ patch in the cached training cases, 3 queries each, at least 4
    cache = out / "cache" / plan["cache_key"]
    cases = [read_case(cache, f"lung_ct_tr_{index:03d}").boxes for index in range(3)]
    expected = plan_queries(objects_per_patch(cases, [32, 32, 32]), minimum=4)
    assert plan["detector"] == expected
    assert plan["detection_strides"] == [4, 8] and plan["patch_size"] == [32, 32, 32]
    # network_def read it, and the model plan records the network as built
    assert plan["network"]["target"] == "shared.networks.deformable_detr.DeformableDETRNetwork"
    assert plan["network"]["arguments"]["num_queries"] == expected["num_queries"]
    assert plan["network"]["arguments"]["hidden_channels"] == 32
    assert _planned_network(out).num_queries == expected["num_queries"]
    assert (out / "checkpoints" / "last_checkpoint_2.pt").is_file()


def test_training_resumes_from_its_checkpoint(trained):
    result = run_bundle("run", "--config_file", config_list(PLAIN, "train.json", "quick.json"), "--dataset_dir",
                        str(trained / "data"), "--output_dir", str(trained / "out"), *_tiny("plain"), *TRAIN[:-4],
                        "--epochs", "2", "--checkpoint_every", "2", cwd=trained)
    assert "resuming from" in result.stdout + result.stderr
    assert (trained / "out" / "checkpoints" / "last_checkpoint_4.pt").is_file()
    _planned_network(trained / "out")


def test_evaluate_and_inference_json_alone_use_the_trained_network(trained, tmp_path):
    run_bundle("run", "--config_file", config_list(PLAIN, "train.json", "quick.json", "evaluate.json"),
               "--dataset_dir", str(trained / "data"), "--output_dir", str(trained / "out"), *_tiny("plain"),
               "--bootstrap", "10", "--tile_score_threshold", "0.0", cwd=trained / "elsewhere")
    evaluation = trained / "out" / "evaluation"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    evaluated = json.loads((evaluation / "predictions" / "predictions.json").read_text())
    assert metrics["count/images"] == 1 and metrics["count/predictions"] == len(evaluated[0]["box"]) > 0
    # the plain inference config, told only where the model is: the plan's network (a paper-size network
    # would not load the tiny weights), and the same boxes as the evaluation (same settings, no mirroring)
    result = run_bundle("run", "--config_file", str(PLAIN / "inference.json"), "--dataset_dir", str(trained / "data"),
                        "--model_dir", str(trained / "out"), "--prediction_dir", str(tmp_path / "alone"),
                        "--tile_score_threshold", "0.0", "--inference#mirror", "False", "--inference#batch_size",
                        "2", cwd=tmp_path)
    assert "num_queries as trained" in result.stdout + result.stderr
    alone = json.loads((tmp_path / "alone" / "predictions.json").read_text())
    assert len(alone) == 1
    np.testing.assert_allclose(alone[0]["box"], evaluated[0]["box"], rtol=1e-5, atol=1e-4)
    assert (tmp_path / "alone" / "candidates.csv").is_file()


def test_plain_bundle_fine_tunes_from_an_exported_plain_encoder(trained, tmp_path):
    """The plain encoder (the Retina U-Net's, which MultiTalent's plain bundle pre-trains) into plain DETR."""
    fine_tune_from_exported_encoder(PLAIN, trained, tmp_path, *_tiny("plain"), *TRAIN,
                                    architecture={"name": "plain", "preset": "tiny"})
    assert (tmp_path / "out" / "checkpoints" / "last_checkpoint_4.pt").is_file()
    network = _planned_network(tmp_path / "out")
    assert network.network_spec["arguments"]["encoder"] == {"name": "plain", "preset": "tiny"}


def test_resenc_bundle_fine_tunes_from_an_exported_encoder(trained, tmp_path):
    fine_tune_from_exported_encoder(RESENC, trained, tmp_path, *_tiny("resenc"), *TRAIN)
    # the warm-up phase (freeze_epochs 1 of quick.json: 2 iterations with the encoder frozen) then 2 more
    assert (tmp_path / "out" / "checkpoints" / "last_checkpoint_4.pt").is_file()
    network = _planned_network(tmp_path / "out")
    assert network.network_spec["arguments"]["encoder"] == TINY
