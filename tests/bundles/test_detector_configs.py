"""The detector bundles' configs, parsed without running them: the paper's recipe is what ``train.json``
gives, and every choice the issue names is a node a user can override.

Only the model nodes are built (tiny encoder, no data), so this runs in seconds; the end-to-end runs are in
``test_detector_bundles.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from shared.detectors.retina_unet import RetinaUNetDetector
from shared.losses.box_regression import DeltaL1Loss, GIoULoss
from shared.losses.classification import FocalClassificationLoss, HardNegativeBCELoss
from shared.losses.segmentation import SegmentationLoss

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
DETECTORS = ["retina_unet_detection", "resenc_retina_unet_detection"]
ANCHORS = [[4.0, 6.0, 8.0]] * 3


def _detector(bundle: str, *, configs: tuple[str, ...] = ("train.json",), **overrides) -> RetinaUNetDetector:
    """The bundle's ``detector`` node on a tiny network, with ``overrides`` applied as on the command line."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / name) for name in configs])
    encoder_name = parser.get("encoder")["name"]
    settings = {"encoder": {"name": encoder_name, "preset": "tiny"}, "decoder_channels": 16,
                "detection_strides": [4, 8], "network": "@network_def", "detector#anchor_sizes": ANCHORS}
    for key, value in {**settings, **overrides}.items():
        parser[key] = value
    return parser.get_parsed_content("detector")


@pytest.mark.parametrize("bundle", DETECTORS)
@pytest.mark.parametrize("configs", [("train.json",), ("train.json", "quick.json")])
def test_train_json_gives_the_papers_losses_and_segmentation_head(bundle, configs):
    detector = _detector(bundle, configs=configs)
    assert type(detector.classification_loss) is FocalClassificationLoss
    assert type(detector.regression_loss) is DeltaL1Loss and detector.regression_loss.beta == 0
    assert detector.giou_loss is None
    assert isinstance(detector.segmentation_loss, SegmentationLoss)
    assert detector.network.segmentation_classes == "foreground"
    assert detector.network.segmentation_head.out_channels == 2


@pytest.mark.parametrize("bundle", DETECTORS)
def test_the_losses_and_the_segmentation_head_are_options(bundle):
    detector = _detector(
        bundle,
        classification_loss={"_target_": "shared.losses.classification.HardNegativeBCELoss"},
        giou_loss={"_target_": "shared.losses.box_regression.GIoULoss"},
        segmentation_classes="classes",
    )
    assert type(detector.classification_loss) is HardNegativeBCELoss
    assert type(detector.giou_loss) is GIoULoss
    assert detector.network.segmentation_head.out_channels == detector.network.num_classes + 1


@pytest.mark.parametrize("bundle", DETECTORS)
def test_inference_json_builds_the_segmentation_head_train_json_trained(bundle):
    # inference.json restates the network; its checkpoint must load, so both follow one key
    for name, channels in (("foreground", 2), ("classes", 3)):
        parser = ConfigParser()
        parser.read_config(str(BUNDLES / bundle / "configs" / "inference.json"))
        parser["encoder"] = {"name": parser.get("encoder")["name"], "preset": "tiny"}
        parser["detection_strides"] = [4, 8]
        parser["segmentation_classes"] = name
        assert parser.get_parsed_content("network_def").segmentation_head.out_channels == channels
