"""MONAI's workflow contract on every bundle: ``ConfigWorkflow(workflow_type=...).check_properties()``.

MONAI Label, FL and Deploy drive a bundle through the properties of ``monai.bundle.properties``
(``train#trainer``, ``train#trainer#max_epochs``, ``train#dataset``, ``train#inferer``; ``dataset``,
``evaluator``, ``inferer``, ``network_def`` in inference), so every train config and every
inference/evaluation config (the pre-training bundle's reconstruction viewer included) must define
them, and optional properties that the config refers to must sit at their ids. ``check_properties`` resolves each required property, so the workflows run their
``initialize`` on tiny generated data (and the inference ones on a tiny trained model), from a working
directory that is not the bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from shared.bundles import config_bundle_root
from shared.data.synthetic.dataset import make_dataset

REPOSITORY = Path(__file__).resolve().parents[2]
BUNDLES = REPOSITORY / "bundles"
DETECTORS = ["retina_unet_detection", "resenc_retina_unet_detection", "deformable_detr_detection",
             "resenc_deformable_detr_detection"]
TINY_DETR = {"num_levels": 2, "hidden_channels": 32, "num_heads": 2, "num_points": 1, "encoder_layers": 1,
             "decoder_layers": 1, "feedforward_channels": 32, "minimum_queries": 4}


def _tiny_detector(bundle: str) -> dict:
    encoder = "resenc" if bundle.startswith("resenc") else "plain"
    sizes = TINY_DETR if "deformable_detr" in bundle else {"decoder_channels": 16, "detection_strides": [4, 8]}
    return {"encoder": {"name": encoder, "preset": "tiny"}, **sizes,
            "patch_size": [32, 32, 32], "batch_size": 2, "iterations_per_epoch": 2, "epochs": 1,
            "lr_warmup_iterations": 1, "checkpoint_every": 2}


TINY_MAE = {"encoder": {"name": "resenc", "preset": "tiny"}, "patch_size": [32, 32, 32], "batch_size": 2,
            "iterations_per_epoch": 2, "epochs": 1, "num_workers": 0, "max_scans": 1}
TINY_VOCO = {"encoder": {"name": "resenc", "preset": "tiny"}, "crop_size": [16, 16, 16], "projector_channels": 16,
             "batch_size": 2, "iterations_per_epoch": 2, "epochs": 1, "num_workers": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("properties")
    counts = {"training": 3, "validation": 1, "test": 1, "unlabelled": 2}
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(data) -> dict[str, Path]:
    """One tiny trained model per detector bundle (``python -m monai.bundle run``, from another folder)."""
    models = {}
    for bundle in DETECTORS:
        out = data / "models" / bundle
        arguments = [item for key, value in _tiny_detector(bundle).items() for item in (f"--{key}", json.dumps(value))]
        configs = [str(BUNDLES / bundle / "configs" / name) for name in ("train.json", "quick.json")]
        environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(configs),
                                 "--dataset_dir", str(data / "data"), "--output_dir", str(out), *arguments],
                                cwd=data, env=environment, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        models[bundle] = out
    return models


def _check(bundle: str, configs: list[str], workflow_type: str, overrides: dict, folder: Path) -> list[str]:
    files = [str(BUNDLES / bundle / "configs" / name) for name in configs]
    previous = Path.cwd()
    os.chdir(folder)  # not the bundle: bundle_root must still be the bundle's folder
    try:
        workflow = ConfigWorkflow(config_file=files, workflow_type=workflow_type, logging_file=False, **overrides)
        workflow.initialize()
        assert Path(workflow.bundle_root) == BUNDLES / bundle
        return workflow.check_properties()
    finally:
        os.chdir(previous)


@pytest.mark.parametrize("bundle", DETECTORS)
def test_detector_training_defines_monai_train_properties(bundle, data, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # initialize installs the bundles' hook
    overrides = {**_tiny_detector(bundle), "dataset_dir": str(data / "data"), "output_dir": str(tmp_path / "out"),
                 "num_workers": 0, "amp": False}
    assert _check(bundle, ["train.json"], "train", overrides, tmp_path) == []


@pytest.mark.parametrize("bundle", DETECTORS)
@pytest.mark.parametrize("configs", [["inference.json"], ["train.json", "evaluate.json"]])
def test_detector_inference_defines_monai_infer_properties(bundle, configs, data, trained, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    overrides = {"dataset_dir": str(data / "data"), "output_dir": str(trained[bundle]),
                 "model_dir": str(trained[bundle]), "prediction_dir": str(tmp_path / "predictions"),
                 "evaluation_dir": str(tmp_path / "evaluation")}
    assert _check(bundle, configs, "infer", overrides, tmp_path) == []


@pytest.mark.parametrize("bundle, tiny", [("resenc_mae_pretrain", TINY_MAE), ("resenc_voco_pretrain", TINY_VOCO),
                                          ("resenc_spark_pretrain", TINY_MAE),
                                          ("resenc_models_genesis_pretrain", TINY_MAE)])
def test_pretraining_defines_monai_train_properties(bundle, tiny, data, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    overrides = {**tiny, "dataset_dir": str(data / "data"), "output_dir": str(tmp_path / "out"), "amp": False}
    assert _check(bundle, ["train.json"], "train", overrides, tmp_path) == []


def test_pretraining_inference_defines_monai_infer_properties(data, tmp_path, monkeypatch):
    """The reconstruction viewer is an infer workflow too: scans through the preprocessing, the masking
    inferer, the ScanEvaluator and its writer (a model of random weights: the properties only resolve)."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    import torch

    from shared.networks.resenc_unet import ResEncUNet

    models = tmp_path / "models"
    models.mkdir()
    torch.save(ResEncUNet(1, 1, encoder_spec=TINY_MAE["encoder"]).state_dict(), models / "model.pt")
    (models / "encoder.json").write_text(json.dumps({"modality": "CT", "in_channels": 1, "spacing": [1.5] * 3}))
    overrides = {"encoder": TINY_MAE["encoder"], "patch_size": [32, 32, 32], "max_scans": 1,
                 "dataset_dir": str(data / "data"), "model_dir": str(models),
                 "prediction_dir": str(tmp_path / "reconstructions")}
    assert _check("resenc_mae_pretrain", ["inference.json"], "infer", overrides, tmp_path) == []


@pytest.mark.parametrize("bundle", ["resenc_spark_pretrain", "resenc_models_genesis_pretrain"])
def test_spark_and_genesis_inference_define_monai_infer_properties(bundle, data, tmp_path, monkeypatch):
    """Their viewers too (SparK: masked reconstruction through the sparse path; Models Genesis: restoration)."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    overrides = {"encoder": TINY_MAE["encoder"], "patch_size": [32, 32, 32], "max_scans": 1,
                 "dataset_dir": str(data / "data"), "prediction_dir": str(tmp_path / "predictions")}
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "inference.json"))
    parser.update({"encoder": overrides["encoder"]})
    models = tmp_path / "models"
    models.mkdir()
    import torch

    torch.save(parser.get_parsed_content("network_def").state_dict(), models / "model.pt")  # random weights
    (models / "encoder.json").write_text(json.dumps({"modality": "CT", "in_channels": 1, "spacing": [1.5] * 3}))
    assert _check(bundle, ["inference.json"], "infer", {**overrides, "model_dir": str(models)}, tmp_path) == []


def test_bundle_root_is_the_folder_of_the_config_being_run(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    copy = tmp_path / "downloaded" / "retina_unet_detection"
    shutil.copytree(BUNDLES / "retina_unet_detection", copy, ignore=shutil.ignore_patterns("models"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    workflow = ConfigWorkflow(config_file=str(copy / "configs" / "inference.json"), workflow_type="infer",
                              logging_file=False)
    workflow.initialize()
    assert Path(workflow.bundle_root) == copy
    assert Path(workflow.parser.get_parsed_content("model_dir")) == copy / "models"
    assert Path(workflow.parser.get_parsed_content("prediction_dir")).resolve() == \
        work / "runs" / "retina_unet_detection" / "predictions"
    # --bundle_root still decides, as the Model Zoo's CI passes it
    workflow = ConfigWorkflow(config_file=str(copy / "configs" / "inference.json"), workflow_type="infer",
                              logging_file=False, bundle_root=str(tmp_path / "elsewhere"))
    workflow.initialize()
    assert workflow.bundle_root == str(tmp_path / "elsewhere")


@pytest.mark.parametrize("arguments, expected", [
    (["verify_net_in_out", "network_def", "--config_file", "/b/configs/inference.json"], "/b"),
    (["run", "--config_file=/b/configs/train.json"], "/b"),
    (["run", "--config_file", "['/b/configs/train.json','/other/quick.json']"], "/b"),
    (["run", "--config_file", "/b/configs/train.json,/b/configs/quick.json"], "/b"),
    (["run", "--config_file", "/b/my_train.json"], "/b"),  # not in configs/: its own folder
])
def test_scripts_without_a_workflow_find_the_bundle_from_their_config_file(arguments, expected, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["monai.bundle", *arguments])
    assert config_bundle_root() == str(Path(expected).resolve())


def test_a_bare_parser_without_config_file_arguments_uses_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.chdir(tmp_path)
    parser = ConfigParser({"bundle_root": "$shared.bundles.config_bundle_root()"}, globals={"shared": "shared"})
    assert parser.get_parsed_content("bundle_root") == str(tmp_path)
