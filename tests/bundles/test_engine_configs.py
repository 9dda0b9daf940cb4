"""The bundles' engine nodes, parsed without running: MONAI's property ids, and handler order where it matters."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
DETECTORS = ["retina_unet_detection", "resenc_retina_unet_detection"]


def _config(bundle: str, name: str) -> dict:
    return ConfigParser.load_config_file(str(BUNDLES / bundle / "configs" / name))


def _targets(handlers: list) -> list[str]:
    return [handler["_target_"].rsplit(".", 1)[-1] if isinstance(handler, dict) else handler for handler in handlers]


@pytest.mark.parametrize("bundle", [*DETECTORS, "resenc_mae_pretrain"])
def test_the_trainer_is_monai_engines_with_its_handlers_in_train_handlers(bundle):
    train = _config(bundle, "train.json")["train"]
    assert train["trainer"]["_target_"] == "shared.engines.trainer.LossDictTrainer"
    assert train["trainer"]["train_handlers"] == "@train#handlers"
    assert train["trainer"]["inferer"] == "@train#inferer"
    assert train["trainer"]["train_data_loader"] == "@train#dataloader"
    targets = _targets(train["handlers"])
    # TensorBoard first: multi_gpu_train.json drops the first handler on ranks other than 0
    assert targets[0] == "TensorBoardStatsHandler"
    multi = _config(bundle, "multi_gpu_train.json")
    assert multi["train#trainer#train_handlers"] == "$@train#handlers[1 if idist.get_rank() > 0 else 0:]"
    # an epoch's checkpoint comes after its validation and best-model saving
    order = [name for name in ("PeriodicValidation", "ModelSaver", "ResumableCheckpoint") if name in targets]
    assert order == sorted(order, key=targets.index) and "ResumableCheckpoint" in order and "ModelSaver" in order
    assert "PolyLearningRate" in targets and "ProgressBar" in targets


@pytest.mark.parametrize("bundle", DETECTORS)
def test_validation_is_an_evaluator_with_the_detection_key_metric_and_a_progress_bar(bundle):
    config = _config(bundle, "train.json")
    validate = config["validate"]
    evaluator = validate["evaluator"]
    assert evaluator["_target_"] == "shared.engines.evaluator.DetectionEvaluator"
    assert (evaluator["val_data_loader"], evaluator["inferer"], evaluator["key_val_metric"],
            evaluator["val_handlers"]) == ("@validate#dataloader", "@validate#inferer", "@validate#key_metric",
                                           "@validate#handlers")
    assert evaluator["network"] == "@detector", "the bare detector, not the DDP wrapper"
    metrics = [metric["_target_"] for metric in validate["key_metric"].values()]
    assert metrics == ["shared.metrics.ignite.DetectionMetrics"]
    assert _targets(validate["handlers"]) == ["TensorBoardStatsHandler", "ProgressBar"]
    targets = _targets(config["train"]["handlers"])
    assert targets.index("freeze_phase") < targets.index("PeriodicValidation")
    assert "$@transfer" in config["initialize"]
    assert "$@transfer" in _config(bundle, "multi_gpu_train.json")["initialize"]
