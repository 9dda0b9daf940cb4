"""Cost of the Models Genesis corruptions: voxels per second each, and their share of a CPU training step.

Everything runs on one thread (one DataLoader worker corrupts one sample) and is timed in CPU
seconds of this process, which a busy shared machine disturbs less than wall time. Part 1 forces each
corruption (probability 1) on a ``patch``³ volume of z-scored noise, then runs the whole pipeline with
every corruption forced and with the paper's probabilities. Part 2 compares, at ``step_patch``³, the
corruption of one batch (paper probabilities) with one SGD step of ``ModelsGenesis`` around a ResEnc
U-Net of the ``preset`` encoder (forward, backward, update)::

    python -m tools.benchmarks.bench_models_genesis --patch 160 --step_patch 64 --preset tiny
"""

from __future__ import annotations

import time

import fire
import torch
from monai.transforms import Compose

from shared.networks.resenc_unet import ResEncUNet
from shared.ssl.models_genesis import (
    ModelsGenesis,
    RandBezierIntensityd,
    RandGenesisFlipd,
    RandInOutPaintd,
    RandLocalShuffled,
    genesis_corruptions,
)


def forced_corruptions() -> dict[str, object]:
    """Each corruption with probability 1 (the flip: a first flip always)."""
    return {
        "flip": RandGenesisFlipd("image", prob=1.0),
        "local shuffle": RandLocalShuffled("image", prob=1.0),
        "Bézier intensity": RandBezierIntensityd("image", prob=1.0),
        "in-painting": RandInOutPaintd("image", prob=1.0, inpaint_prob=1.0),
        "out-painting": RandInOutPaintd("image", prob=1.0, inpaint_prob=0.0),
    }


def cpu_seconds(function, repeats: int) -> float:
    """Mean CPU seconds of ``function()`` over ``repeats`` calls, after one warm-up call."""
    function()
    start = time.process_time()
    for _ in range(repeats):
        function()
    return (time.process_time() - start) / repeats


def corruption_seconds(transform, size: int, repeats: int, seed: int = 0) -> float:
    """CPU seconds per sample of ``transform`` on a (1, size, size, size) z-scored volume."""
    volume = torch.randn(1, size, size, size, generator=torch.Generator().manual_seed(seed))
    transform.set_random_state(seed)
    return cpu_seconds(lambda: transform({"image": volume}), repeats)


def step_seconds(size: int, batch_size: int, preset: str, repeats: int) -> float:
    """CPU seconds of one SGD step of Models Genesis on a ResEnc U-Net at (batch, 1, size³)."""
    torch.manual_seed(0)
    model = ModelsGenesis(ResEncUNet(1, 1, encoder_spec={"name": "resenc", "preset": preset}))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    images, target = torch.randn(2, batch_size, 1, size, size, size)

    def step() -> None:
        loss = model(images, target)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return cpu_seconds(step, repeats)


def benchmark(patch: int = 160, step_patch: int = 64, batch_size: int = 2, preset: str = "tiny",
              repeats: int = 3) -> None:
    """Prints two markdown tables: throughput at ``patch``³, shares of a step at ``step_patch``³."""
    torch.set_num_threads(1)
    voxels = patch**3
    print(f"| corruption ({patch}³, forced) | CPU s per sample | Mvoxels/s |\n|---|---|---|")
    rows = dict(forced_corruptions())
    forced = forced_corruptions()
    rows["all, forced (out-painting)"] = Compose([forced[name] for name in ("flip", "local shuffle",
                                                                          "Bézier intensity", "out-painting")])
    rows["all, paper probabilities"] = Compose(genesis_corruptions())
    for name, transform in rows.items():
        seconds = corruption_seconds(transform, patch, repeats)
        print(f"| {name} | {seconds:.3f} | {voxels / seconds / 1e6:.1f} |", flush=True)

    step = step_seconds(step_patch, batch_size, preset, repeats)
    pipeline = batch_size * corruption_seconds(Compose(genesis_corruptions()), step_patch, 4 * repeats)
    shuffle = batch_size * corruption_seconds(RandLocalShuffled("image", prob=1.0), step_patch, 4 * repeats)
    print(f"\n| {step_patch}³, batch {batch_size}, ResEnc U-Net '{preset}' | CPU s | share of step + corruption |")
    print("|---|---|---|")
    print(f"| training step (forward, backward, SGD) | {step:.3f} | {step / (step + pipeline):.0%} |")
    print(f"| corruptions, paper probabilities | {pipeline:.3f} | {pipeline / (step + pipeline):.0%} |")
    print(f"| local shuffle alone, forced | {shuffle:.3f} | {shuffle / (step + shuffle):.0%} |", flush=True)


if __name__ == "__main__":
    fire.Fire(benchmark)
