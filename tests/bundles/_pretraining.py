"""What the pre-training bundle tests share: tiny data, running a bundle, an exact-resume run, the transfer check."""

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


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = torch.load(first, weights_only=True), torch.load(second, weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_encoder_export(out: Path, method: str) -> None:
    """The manifest matches its weights and the run; the keys are the dense ResEnc encoder's."""
    manifest = json.loads((out / "encoder.json").read_text())
    assert manifest["weights"]["sha256"] == sha256_file(out / "encoder.pt")
    assert manifest["architecture"] == TINY and manifest["method"] == method
    assert manifest["spacing"] == [1.5, 1.5, 1.5] and manifest["modality"] == "CT"
    assert manifest["data"]["num_volumes"] == 2 and manifest["method_settings"]["iterations"] == 4
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
        pictures += [(event.wall_time, event.step) for event in events.Images(tag)] if tag in events.Tags()[IMAGES] else []
    return [step for _, step in sorted(pictures)]
