"""Multi-GPU fine-tuning from a pre-trained encoder (issue #12, item 7): ``torchrun --nproc_per_node 2``
(gloo, CPU) through the freeze phase and past it, for both Retina U-Net bundles and the ResEnc
Deformable DETR bundle (its encoder is the same; its queries are planned and its losses matched per rank).

The DDP-wrapped detector used to crash at the second iteration when the freeze phase flipped
``requires_grad``. Each rank writes its network's weights at the start, at the end of the freeze phase
and at the end (a handler this test appends to ``train#handlers`` with an extra config file); the
encoder must be the pre-trained one, bit for bit, until the freeze phase ends on both ranks, then train,
and both ranks must end with the same weights. Sizes: tiny presets, 32³ patches, 2 + 2 iterations.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import ignite.distributed as idist
import pytest
import torch
from ignite.engine import Events

from shared.checkpoints.manifest import export_encoder
from shared.data.synthetic.dataset import make_dataset
from shared.networks.retina_unet import RetinaUNetNetwork

REPOSITORY = Path(__file__).resolve().parents[2]
RETINA_UNET = ["--decoder_channels", "16", "--detection_strides", "[4,8]"]
DETR = ["--num_levels", "2", "--hidden_channels", "32", "--num_heads", "2", "--num_points", "1", "--encoder_layers",
        "1", "--decoder_layers", "1", "--feedforward_channels", "32", "--minimum_queries", "4"]
#: bundle, encoder and tiny sizes of each case
CASES = {"plain": ("retina_unet_detection", "plain", RETINA_UNET),
         "resenc": ("resenc_retina_unet_detection", "resenc", RETINA_UNET),
         "resenc_detr": ("resenc_deformable_detr_detection", "resenc", DETR)}
FREEZE_ITERATIONS = 2  # freeze_epochs 1 of 2 iterations, then epochs 1 of 2 iterations


class RankSnapshots:
    """Test handler: each rank saves ``network``'s state dict at the start, after the freeze phase and at the end."""

    def __init__(self, folder: str, network: torch.nn.Module, freeze_iterations: int):
        self.folder, self.network, self.freeze_iterations = Path(folder), network, freeze_iterations

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self.save, "start")
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=self.freeze_iterations), self.save, "frozen")
        engine.add_event_handler(Events.COMPLETED, self.save, "end")

    def save(self, engine, tag: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {name: value.detach().clone() for name, value in self.network.state_dict().items()}
        torch.save(state, self.folder / f"rank{idist.get_rank()}_{tag}.pt")


def _encoder(name: str, folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    network = RetinaUNetNetwork(1, 2, encoder={"name": name, "preset": "tiny"}, decoder_channels=16,
                                detection_strides=[4, 8])
    manifest = export_encoder(network, folder, architecture={"name": name, "preset": "tiny"}, in_channels=1,
                              modality="CT", spacing=[1.5, 1.5, 1.5], normalization="ct", method="mae")
    return manifest, {key: value.clone() for key, value in network.encoder.state_dict().items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    counts = {"training": 3, "validation": 1, "test": 0, "unlabelled": 0}  # rank 1 validates no case
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_torchrun_fine_tunes_from_a_pretrained_encoder_through_the_freeze_phase(data, tmp_path, case):
    bundle, encoder, sizes = CASES[case]
    manifest, pretrained = _encoder(encoder, tmp_path / "encoder")
    snapshots = tmp_path / "snapshots"
    extra = tmp_path / "snapshots.json"
    extra.write_text(json.dumps({"+train#handlers": [{
        "_target_": f"{__name__}.RankSnapshots", "folder": str(snapshots), "network": "@network",
        "freeze_iterations": "@freeze_iterations"}]}))
    configs = REPOSITORY / "bundles" / bundle / "configs"
    files = [configs / "train.json", configs / "quick.json", configs / "multi_gpu_train.json", extra]
    arguments = [
        "--config_file", "[" + ",".join(f"'{path}'" for path in files) + "]",
        "--dataset_dir", str(data / "data"), "--output_dir", str(tmp_path / "out"),
        "--cache_dir", str(data / "cache"), "--pretrained_encoder", str(manifest),
        "--encoder", json.dumps({"name": encoder, "preset": "tiny"}), *sizes, "--patch_size", "[32,32,32]",
        "--batch_size", "2", "--iterations_per_epoch", "2", "--epochs", "1", "--freeze_epochs", "1",
        "--lr_warmup_iterations", "1", "--checkpoint_every", "2",
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}
    # --standalone: a free port, so other torchrun tests may run at the same time
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "monai.bundle", "run", *arguments], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    found = re.search(r"transferred (\d+) tensors from", output)
    assert found and "freeze phase:" in output, output[-3000:]
    states = {(rank, tag): torch.load(snapshots / f"rank{rank}_{tag}.pt", weights_only=True)
              for rank in (0, 1) for tag in ("start", "frozen", "end")}
    encoder_keys = [key for key in states[0, "start"] if key.startswith("encoder.")]
    for rank in (0, 1):  # the transfer reached every rank (a random stem's weight is not transferred; its
        # initial biases and norm weights, zeros and ones, equal the pre-trained stem's by chance)
        same = [key for key in encoder_keys if torch.equal(states[rank, "start"][key], pretrained[key[8:]])]
        assert len(encoder_keys) > len(same) >= int(found.group(1)) > 0, (rank, len(same), found.group(0))
        for key in encoder_keys:  # bit-identical through the freeze phase (momentum and weight decay on)
            assert torch.equal(states[rank, "frozen"][key], states[rank, "start"][key]), (rank, key)
        trained = [key for key in states[rank, "start"] if not key.startswith("encoder.")
                   and not torch.equal(states[rank, "frozen"][key], states[rank, "start"][key])]
        assert trained, "the decoder and heads train during the freeze phase"
        moved = [key for key in encoder_keys if not torch.equal(states[rank, "end"][key], states[rank, "frozen"][key])]
        assert moved, "the encoder trains after the freeze phase"
    for key, value in states[0, "end"].items():
        assert torch.equal(value, states[1, "end"][key]), key  # the ranks agree
    assert (tmp_path / "out" / "model.pt").is_file()
