"""User errors in the bundles' entry points: one plain line and exit status 2, found before any work.

A bad pre-trained encoder (missing, corrupt, another architecture) and an output folder that cannot be
written must fail in seconds, before the data set is preprocessed, not after it. Two real
``python -m monai.bundle run`` processes check what a user sees; the other cases run the bundle's
``initialize`` in this process (a fresh interpreter costs seconds).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from shared.bundles.user_errors import find_input_error
from shared.checkpoints.manifest import export_encoder
from shared.io.errors import InputError
from shared.networks.resenc_unet import ResEncUNet
from tests._cases import write_dataset
from tests.tools._unwritable import below_a_file, unwritable_folder

REPOSITORY = Path(__file__).resolve().parents[2]
BUNDLES = REPOSITORY / "bundles"
DETECTOR = BUNDLES / "retina_unet_detection" / "configs"
TINY = {"encoder": {"name": "plain", "preset": "tiny"}, "decoder_channels": 16, "detection_strides": [4, 8],
        "patch_size": [16, 16, 16], "spacing": [2.0, 2.0, 2.0], "num_workers": 0}


@pytest.fixture(scope="module")
def datalist(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("raw"), rng=np.random.default_rng(0), training=2, validation=1)


def _arguments(overrides: dict) -> list[str]:
    return [item for key, value in overrides.items()
            for item in (f"--{key}", value if isinstance(value, str) else json.dumps(value))]


def _run_bundle(config_files: list[Path], overrides: dict, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}
    env.pop("MISSING_PIECE_DEBUG", None)
    files = "[" + ",".join(f"'{path}'" for path in config_files) + "]"
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *_arguments(overrides)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _initialize(config_files: list[Path], overrides: dict, monkeypatch) -> InputError:
    """The bundle's ``initialize`` in this process; returns the user error found in what it raised."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # initialize installs the bundles' hook
    workflow = ConfigWorkflow(config_file=[str(path) for path in config_files], **overrides)
    with pytest.raises(Exception) as raised:
        workflow.initialize()
    found = find_input_error(raised.value)
    assert found is not None, raised.value
    return found


def _encoder(folder: Path, name: str = "plain") -> Path:
    torch.manual_seed(0)
    network = ResEncUNet(1, 1, encoder_spec={"name": name, "preset": "tiny"})
    return export_encoder(network, folder, architecture={"name": name, "preset": "tiny"}, in_channels=1,
                          modality="CT", spacing=[2.0, 2.0, 2.0], normalization="ct", method="mae")


def test_missing_encoder_is_one_line_before_preprocessing(datalist, tmp_path):
    out = tmp_path / "out"
    result = _run_bundle([DETECTOR / "train.json"], {**TINY, "datalist": str(datalist), "output_dir": str(out),
                                                     "pretrained_encoder": str(tmp_path / "nope.pt")}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) < 5 and lines[-1] == f"error: {tmp_path / 'nope.pt'}: no such file or folder", result.stderr
    assert not (out / "cache").exists() and not (out / "model_plan.json").exists()


def test_output_below_a_file_is_one_line(datalist, tmp_path):
    out = below_a_file(tmp_path)
    result = _run_bundle([DETECTOR / "train.json"], {**TINY, "datalist": str(datalist), "output_dir": str(out)},
                         cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) < 5 and lines[-1].startswith(f"error: {out}: output folder cannot be created"), result.stderr


@pytest.mark.parametrize("case", ["architecture", "sha256"])
def test_bad_encoder_fails_in_initialize_before_preprocessing(case, datalist, tmp_path, monkeypatch):
    manifest = _encoder(tmp_path / "encoder", name="resenc" if case == "architecture" else "plain")
    if case == "sha256":
        weights = tmp_path / "encoder" / "encoder.pt"
        weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    out = tmp_path / "out"
    error = _initialize([DETECTOR / "train.json"], {**TINY, "datalist": str(datalist), "output_dir": str(out),
                                                    "pretrained_encoder": str(manifest)}, monkeypatch)
    expected = "architecture of the pre-trained encoder differs" if case == "architecture" else "sha256 is"
    assert expected in str(error)
    assert not (out / "cache").exists()


def test_good_encoder_is_loaded_in_initialize(datalist, tmp_path, monkeypatch):
    # initialize ends with the transfer, so the run only reuses it; the data are still untouched
    manifest = _encoder(tmp_path / "encoder")
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    workflow = ConfigWorkflow(config_file=[str(DETECTOR / "train.json")], **TINY, datalist=str(datalist),
                              output_dir=str(tmp_path / "out"), pretrained_encoder=str(manifest), amp=False)
    workflow.initialize()
    assert "transfer" in workflow.parser.ref_resolver.resolved_content  # loaded by initialize, not by run
    report = workflow.parser.get_parsed_content("transfer")
    assert report is not None and report.transferred_keys
    assert not (tmp_path / "out" / "cache").exists()


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_initialize_warns_when_the_bundle_spacing_is_not_the_encoders(datalist, tmp_path, monkeypatch):
    manifest = _encoder(tmp_path / "encoder")  # pre-trained at 2 mm, on CT normalised as CT
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    workflow = ConfigWorkflow(config_file=[str(DETECTOR / "train.json")], **{**TINY, "spacing": [2.5, 2.5, 2.5]},
                              datalist=str(datalist), output_dir=str(tmp_path / "out"),
                              pretrained_encoder=str(manifest), amp=False)
    # the bundle's logging.conf replaces the root handlers (caplog's too): listen on the module's logger
    records, logger = _Records(), logging.getLogger("shared.engines.finetune")
    logger.addHandler(records)
    try:
        workflow.initialize()
    finally:
        logger.removeHandler(records)
    warned = [record.getMessage() for record in records.records]
    assert len(warned) == 1 and "pre-trained at spacing [2.0, 2.0, 2.0] mm, fine-tuned at [2.5, 2.5, 2.5] mm" in warned[0]


@pytest.mark.parametrize("bundle, configs, key", [
    ("retina_unet_detection", ["train.json"], "output_dir"),
    ("retina_unet_detection", ["train.json", "multi_gpu_train.json"], "output_dir"),
    ("retina_unet_detection", ["train.json", "evaluate.json"], "output_dir"),
    ("retina_unet_detection", ["inference.json"], "prediction_dir"),
    ("resenc_retina_unet_detection", ["train.json"], "output_dir"),
    ("resenc_retina_unet_detection", ["inference.json"], "prediction_dir"),
    ("resenc_mae_pretrain", ["train.json"], "output_dir"),
    ("resenc_mae_pretrain", ["inference.json"], "prediction_dir"),
])
def test_every_entry_point_checks_its_output_folder_first(bundle, configs, key, datalist, tmp_path, monkeypatch):
    overrides = {"datalist": str(datalist), "output_dir": str(tmp_path / "model")}
    with unwritable_folder(tmp_path / "locked") as locked:
        if key == "output_dir" and "evaluate.json" in configs:
            key = "evaluation_dir"  # evaluation reads the model from output_dir and writes here
        error = _initialize([BUNDLES / bundle / "configs" / name for name in configs],
                            {**overrides, key: str(locked / "sub")}, monkeypatch)
    assert f"{locked / 'sub'}: " in str(error) and "not writable" in str(error)
