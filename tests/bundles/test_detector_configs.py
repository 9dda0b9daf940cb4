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
def test_inference_json_builds_the_segmentation_head_train_json_trained(bundle, tmp_path):
    # inference.json restates the network; its checkpoint must load, so both follow one key
    for name, channels in (("foreground", 2), ("classes", 3)):
        parser = ConfigParser()
        parser.read_config(str(BUNDLES / bundle / "configs" / "inference.json"))
        parser["model_dir"] = str(tmp_path)  # no trained model: the config's own encoder
        parser["encoder"] = {"name": parser.get("encoder")["name"], "preset": "tiny"}
        parser["detection_strides"] = [4, 8]
        parser["segmentation_classes"] = name
        assert parser.get_parsed_content("network_def").segmentation_head.out_channels == channels


class _Transferred:
    """Stands for the TransferReport of a run that loaded a pre-trained encoder."""

    transferred_keys = ["encoder.stem.convs.0.conv.weight"]


def _parser(bundle: str, *configs: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / name) for name in configs])
    return parser


@pytest.mark.parametrize("bundle", DETECTORS)
def test_the_freeze_phase_is_three_epochs_added_to_the_fifty_and_only_after_a_transfer(bundle):
    # nnDetection's sgd_base_warmupdecoder_heads: num_warmup_epochs 3 of max_num_epochs 53 (50 + 3)
    names = set(_parser(bundle, "train.json").config)
    assert not names & {"warmup_iterations", "warmup_fraction"}, "one name per thing: lr_warmup_* or freeze_*"
    for transfer, freeze, total, epochs in ((_Transferred(), 7500, 132500, 53), (None, 0, 125000, 50)):
        parser = _parser(bundle, "train.json")
        parser["transfer"] = transfer
        assert parser.get_parsed_content("lr_warmup_iterations") == 4000
        assert parser.get_parsed_content("freeze_iterations") == freeze
        assert parser.get_parsed_content("total_iterations") == total
        assert parser.get_parsed_content("train#trainer#max_epochs") == epochs
        schedule = [node for node in parser.get("train#handlers") if isinstance(node, dict)
                    and node.get("_target_") == "shared.engines.schedule.PolyLearningRate"]
        assert schedule[0]["lr_warmup_iterations"] == "@lr_warmup_iterations"
    assert parser.get("freeze") == "encoder"


@pytest.mark.parametrize("bundle", DETECTORS)
def test_the_paper_configuration_evaluates_with_mirroring_and_quick_does_not(bundle):
    assert _parser(bundle, "train.json").get("inference")["mirror"] is True
    # validation during training stays unmirrored (8x cheaper; nnDetection validates without it too)
    assert _parser(bundle, "train.json").get_parsed_content("validate#inferer#settings")["mirror"] is False
    assert _parser(bundle, "inference.json").get("inference")["mirror"] is True
    assert _parser(bundle, "train.json", "quick.json").get("inference")["mirror"] is False


@pytest.mark.parametrize("bundle", DETECTORS)
def test_per_tile_and_final_filters_have_distinct_names(bundle):
    for configs in (("train.json",), ("inference.json",)):
        parser = _parser(bundle, *configs)
        assert parser.get("tile_score_threshold") <= parser.get("inference")["score_threshold"]
        assert parser.get("tile_min_size") <= parser.get("inference")["min_size"]
        assert "stream_score_threshold" not in parser.config
    detector = _parser(bundle, "train.json").get("detector")
    assert detector["score_threshold"] == "@tile_score_threshold" and detector["min_size"] == "@tile_min_size"
    for name in ("evaluate.json", "inference.json"):
        expression = _parser(bundle, name).get("detectors")
        assert "score_threshold=@tile_score_threshold" in expression and "min_size=@tile_min_size" in expression
