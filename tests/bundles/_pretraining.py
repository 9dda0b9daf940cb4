"""What the bundle tests share: running a bundle; for the pre-training bundles also tiny data, an exact-resume
run, the export and transfer checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from shared.checkpoints.safe_load import sha256_file
from shared.data.synthetic.dataset import make_dataset
from shared.engines.finetune import load_pretrained_encoder
from shared.networks.resenc_unet import ResEncUNet
from shared.networks.retina_unet import RetinaUNetNetwork

REPOSITORY = Path(__file__).resolve().parents[2]
TINY = {"name": "resenc", "preset": "tiny"}


def run_bundle(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <arguments>`` from ``cwd``, one thread; fails the test on a non-zero exit."""
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *arguments], cwd=cwd, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def config_list(configs: Path, *names: str) -> str:
    return "[" + ",".join(f"'{configs / name}'" for name in names) + "]"


def run_workflow(configs: Path, names: list[str], overrides: dict, cwd: Path, workflow_type: str = "train") -> None:
    """``python -m monai.bundle run`` in this process (a subprocess would spend most of the test importing):
    MONAI's ``ConfigWorkflow`` initialize, run, finalize, from ``cwd``."""
    from monai.bundle import ConfigWorkflow

    previous, hook = Path.cwd(), sys.excepthook  # initialize installs the bundles' exception hook
    os.chdir(cwd)
    try:
        workflow = ConfigWorkflow(config_file=[str(configs / name) for name in names], workflow_type=workflow_type,
                                  logging_file=False, **overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    finally:
        os.chdir(previous)
        sys.excepthook = hook


def train_tiny_and_resume(configs: Path, root: Path) -> None:
    """Two-unlabelled-scan data in ``root/data``; 4 iterations straight into ``root/out``, and the same run
    stopped after its first epoch (iteration 2) then started again into ``root/resumed``."""
    counts = {"training": 0, "validation": 0, "test": 0, "unlabelled": 2}
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    common = {"dataset_dir": str(root / "data"), "encoder": TINY, "patch_size": [32, 32, 32],
              "iterations_per_epoch": 2, "epochs": 2, "checkpoint_every": 2, "preview_every": 2}
    names = ["train.json", "quick.json"]
    run_workflow(configs, names, {**common, "output_dir": str(root / "out")}, root)
    # the schedule and the data stream are those of the 4-iteration run; the trainer stops after epoch 1
    run_workflow(configs, names, {**common, "output_dir": str(root / "resumed"), "train#trainer#max_epochs": 1}, root)
    assert (root / "resumed" / "checkpoints" / "last_checkpoint_2.pt").is_file()
    run_workflow(configs, names, {**common, "output_dir": str(root / "resumed")}, root)


def train_and_infer_tiny(configs: Path, root: Path, prediction_dir: str) -> Path:
    """:func:`train_tiny_and_resume`, then the bundle's ``inference.json`` (with ``quick.json``) on the two scans
    with the straight run's model, into ``root/prediction_dir``; returns ``root``."""
    train_tiny_and_resume(configs, root)
    run_workflow(configs, ["inference.json", "quick.json"],
                 {"encoder": TINY, "patch_size": [32, 32, 32], "dataset_dir": str(root / "data"),
                  "model_dir": str(root / "out"), "prediction_dir": str(root / prediction_dir)}, root, "infer")
    return root


def assert_resumed_like_the_straight_run(root: Path, preview_tag: str) -> None:
    """The run of :func:`train_tiny_and_resume` stopped and started again went on from iteration 2 (a restart
    would show pictures 1 and 2 again) and ends with the straight run's weights and encoder."""
    assert (root / "resumed" / "checkpoints" / "last_checkpoint_4.pt").is_file()
    assert preview_steps(root / "resumed" / "logs", preview_tag) == [1, 2, 4]
    assert_same_weights(root / "out" / "model_final.pt", root / "resumed" / "model_final.pt")
    assert_same_weights(root / "out" / "encoder.pt", root / "resumed" / "encoder.pt")


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = torch.load(first, weights_only=True), torch.load(second, weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_encoder_export(out: Path, method: str, *, iterations: int = 4, spacing: float = 1.5) -> None:
    """The manifest matches its weights and a run of ``iterations`` on the two scans at ``spacing`` mm; the keys
    are the dense ResEnc encoder's."""
    manifest = json.loads((out / "encoder.json").read_text())
    assert manifest["weights"]["sha256"] == sha256_file(out / "encoder.pt")
    assert manifest["architecture"] == TINY and manifest["method"] == method
    assert manifest["spacing"] == [spacing] * 3 and manifest["modality"] == "CT"
    assert manifest["data"]["num_volumes"] == 2 and manifest["method_settings"]["iterations"] == iterations
    state = torch.load(out / "encoder.pt", weights_only=True)
    assert state.keys() == ResEncUNet(1, 1, encoder_spec=TINY).encoder.state_dict().keys()


def assert_fine_tuning_takes_the_whole_encoder(out: Path) -> None:
    """The ResEnc Retina U-Net's ``pretrained_encoder`` path loads every exported weight."""
    network = RetinaUNetNetwork(1, 2, encoder=TINY, decoder_channels=16, detection_strides=[4, 8])
    report = load_pretrained_encoder(network, str(out / "encoder.json"), stem="matching", expected_architecture=TINY)
    assert not report.missing_keys and not report.unexpected_keys and not report.shape_mismatches
    exported = torch.load(out / "encoder.pt", weights_only=True)
    assert len(report.transferred_keys) == len(exported)
    for key, value in network.encoder.state_dict().items():
        assert torch.equal(value, exported[key])


def preview_steps(log_dir: Path, tag: str) -> list[int]:
    """The iterations of every TensorBoard picture under ``tag`` in ``log_dir``'s preview files, in the order they
    were written (two starts within one second name their files in process-id order, not in time order)."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    pictures = []
    for path in log_dir.glob("*.previews"):
        events = EventAccumulator(str(path), size_guidance={IMAGES: 0})
        events.Reload()
        if tag in events.Tags()[IMAGES]:
            pictures += [(event.wall_time, event.step) for event in events.Images(tag)]
    return [step for _, step in sorted(pictures)]
