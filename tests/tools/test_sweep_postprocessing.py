from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from shared.data.synthetic.dataset import make_dataset
from shared.inference.sliding_window import VolumeStreams
from tools.sweep_postprocessing import best_setting, grid_points, sweep, sweep_streams

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "retina_unet_detection"
TINY = {"encoder": {"name": "plain", "preset": "tiny"}, "decoder_channels": 16, "detection_strides": [4, 8],
        "patch_size": [32, 32, 32], "spacing": [2.0, 2.0, 2.0], "num_workers": 0, "amp": False,
        "inference": {"overlap": 0.5, "mirror": False, "batch_size": 2, "score_threshold": 0.05,
                      "cluster_iou": 0.5, "min_size": 0.01, "detections_per_volume": 100}}


def test_grid_points_and_best_setting():
    points = grid_points({"a": (1, 2), "b": (3,)})
    assert points == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    assert best_setting([({"a": 1}, float("nan")), ({"a": 2}, 0.5), ({"a": 3}, 0.5)]) == ({"a": 2}, 0.5)


def test_sweep_streams_scores_each_setting():
    # one true box found by two streams and a weak false positive: a score threshold above the false
    # positive's score cannot lose AP, a high one drops the true box too
    boxes = torch.tensor([[0, 0, 0, 8, 8, 8], [0, 0, 0, 8, 8, 8], [20, 20, 20, 28, 28, 28]], dtype=torch.float32)
    streams = VolumeStreams(boxes, torch.tensor([0.6, 0.6, 0.9]), torch.zeros(3, dtype=torch.int64),
                            torch.ones(3), torch.tensor([2.0, 2.0, 1.0]), (32, 32, 32))
    target = {"boxes": boxes[:1], "labels": torch.zeros(1, dtype=torch.int64)}
    results = sweep_streams([streams], [target], ["nodule"], {"score_threshold": (0.05, 0.95)})
    assert [value for _, value in results] == pytest.approx([0.5, 0.0], abs=0.02)


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """A tiny data set, its cache and model plan, and a random Retina U-Net saved as model.pt."""
    root = tmp_path_factory.mktemp("sweep")
    make_dataset("lung_ct", root / "data", counts={"training": 2, "validation": 2, "test": 1, "unlabelled": 0},
                 shape=(40, 40, 40), previews=False, progress=False)
    overrides = root / "tiny.json"
    overrides.write_text(json.dumps(TINY))
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json"), str(overrides)])
    parser["output_dir"], parser["dataset_dir"] = str(root / "model"), str(root / "data")
    parser.get_parsed_content("data")  # preprocesses the splits, writes model_plan.json
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    with torch.no_grad():  # scores around 0.5 instead of the focal-loss prior, so boxes come out
        for name, parameter in network.named_parameters():
            if "cls" in name and name.endswith("bias"):
                parameter.zero_()
    torch.save(network.state_dict(), root / "model" / "model.pt")
    return root, overrides


def test_sweep_writes_the_best_setting_and_inference_reads_it(trained_tiny, capsys):
    root, overrides = trained_tiny
    content = sweep(str(BUNDLE), str(root / "model"), str(root / "data"), config_overrides=str(overrides),
                    cluster_iou="0.3,0.6", score_threshold=(0.05, 0.4), min_size=0.01, device="cpu")
    assert torch.is_grad_enabled()  # the sweep leaves the global grad mode alone
    written = json.loads((root / "model" / "postprocessing.json").read_text())
    assert written["settings"] == content["settings"]
    assert written["metric"] == "AP_IoU_0.10_MaxDet_100" and written["validation_cases"] == 2
    assert len(written["results"]) == 4
    assert written["settings"]["cluster_iou"] in (0.3, 0.6) and written["settings"]["score_threshold"] in (0.05, 0.4)
    assert written["value"] == max(row["AP_IoU_0.10_MaxDet_100"] for row in written["results"])
    assert "| cluster_iou |" in capsys.readouterr().out
    inference = ConfigParser()
    inference.read_config([str(BUNDLE / "configs" / "inference.json"), str(overrides)])
    inference["model_dir"] = str(root / "model")
    settings = inference.get_parsed_content("inferer").settings  # the sliding window's, tuned
    assert {key: settings[key] for key in written["settings"]} == written["settings"]
    assert settings["detections_per_volume"] == TINY["inference"]["detections_per_volume"]
