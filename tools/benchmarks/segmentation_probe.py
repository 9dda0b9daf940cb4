"""Is a detection data set learnable at this budget, and how does that scale with the training scans?

Trains MONAI's ``BasicUNet`` as a plain object-vs-background segmenter on the same cached, sampled and
augmented patches the detectors see, and every ``--eval_every`` iterations prints the Dice of the
objects on validation patches centred on them. No anchors, matching or box decoding are involved, so
a run separates "the objects cannot be learnt from these scans in this many iterations" from "the
detector learns them slower than a segmenter would". ``--num_training`` uses only the first N
training scans, so one generated data set answers how much the number of scans matters.

    python -m tools.make_dataset lung_ct --out /tmp/lung96     # the quick preset: 96 training scans
    python -m tools.benchmarks.segmentation_probe --datalist /tmp/lung96/datalist.json --cache_dir /tmp/cache96 \\
        --num_training 24 --iterations 1000 --eval_every 100
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet

from shared.data.cache import read_case, read_plan
from shared.data.dataset import DetectionPatchDataset, collate_detection
from shared.data.preprocess import preprocess_datalist
from shared.data.transforms_chains import training_chain
from tools._cli import run_cli
from tools.benchmarks._probe import spacing_and_patch


def validation_dice(network: torch.nn.Module, samples: DetectionPatchDataset) -> tuple[float, int, int]:
    """Dice of the predicted foreground over all ``samples`` pooled, with predicted and true voxel counts."""
    network.eval()
    overlap = predicted = true = 0
    with torch.no_grad():
        for index in range(len(samples)):
            sample = samples[index]
            found = network(sample["image"][None]).argmax(1)[0] > 0
            wanted = sample["seg"][0] > 0
            overlap += int((found & wanted).sum())
            predicted, true = predicted + int(found.sum()), true + int(wanted.sum())
    network.train()
    return 2 * overlap / max(predicted + true, 1), predicted, true


def main(datalist: str, cache_dir: str, spacing: float | str | Sequence[float] = 1.5,
         patch_size: int | Sequence[int] = 48,
         iterations: int = 1000, eval_every: int = 100, batch_size: int = 2, learning_rate: float = 1e-3,
         foreground_fraction: float = 1.0, augment: bool = False, num_training: int | None = None,
         features: Sequence[int] = (16, 16, 32, 64, 128, 16), validation_patches: int = 20, seed: int = 0) -> None:
    """Train and print the table: iteration, seconds, mean loss since the last row, validation Dice."""
    torch.manual_seed(seed)
    spacing, patch = spacing_and_patch(spacing, patch_size)
    cached = preprocess_datalist(datalist, cache_dir, splits=("training", "validation"), spacing=spacing)
    train_cases, folder = cached.cases["training"][:num_training], cached.cache_dir
    channels = len(read_plan(cache_dir)["channels"])
    network = BasicUNet(spatial_dims=3, in_channels=channels, out_channels=2, features=tuple(features))
    loss_function = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    chain = training_chain(patch, batch_size=batch_size, foreground_fraction=foreground_fraction, augment=augment)
    samples = DetectionPatchDataset(folder, train_cases, chain, iterations_per_epoch=iterations,
                                    batch_size=batch_size, seed=seed)
    # patches centred on objects: from the scans that hold one
    with_objects = [case for case in cached.cases["validation"] if len(read_case(folder, case).boxes)]
    validation = DetectionPatchDataset(folder, with_objects,
                                       training_chain(patch, batch_size=1, foreground_fraction=1.0, augment=False),
                                       iterations_per_epoch=validation_patches, batch_size=1, seed=seed + 1)
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    print(f"{len(train_cases)} training scans; {validation_patches} validation patches centred on objects")
    print("| iteration | seconds | loss | validation Dice | predicted voxels | true voxels |")
    print("|---|---|---|---|---|---|")
    losses, start = [], time.perf_counter()
    loader = torch.utils.data.DataLoader(samples, batch_size=batch_size, collate_fn=collate_detection)
    for iteration, batch in enumerate(loader, start=1):
        loss = loss_function(network(batch["image"]), (batch["seg"] > 0).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if iteration % eval_every == 0 or iteration == iterations:
            dice, predicted, true = validation_dice(network, validation)
            print(f"| {iteration} | {time.perf_counter() - start:.0f} | {np.mean(losses):.3f} | {dice:.3f} | "
                  f"{predicted} | {true} |", flush=True)
            losses = []


if __name__ == "__main__":
    run_cli(main)
