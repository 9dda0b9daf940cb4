"""Does the MultiTalent core learn the embedded collection? Loss and per-data-set Dice over a short CPU run.

Reads a multi-dataset datalist, draws mixed batches with ``MultiDatasetSampleDataset`` (case weight
1/√N_d), trains ``shared.ssl.multitalent.MultiTalent`` with SGD (Nesterov 0.99) and a poly LR, and prints
the mean loss and training-batch Dice of each data set over the first and the last fifth of the steps
(docs/multitalent.md, "On the embedded collection").

    python -m tools.make_multitalent_dataset --out /tmp/mt --num_training 8 --num_validation 2 --shape "[48,48,40]"
    python -m tools.benchmarks.multitalent_probe --datalist /tmp/mt/multitalent.json --steps 150 --encoder resenc
"""

from __future__ import annotations

import time

import numpy as np
import torch
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    RandSpatialCropd,
)
from torch.utils.data import DataLoader

from shared.data.multi_dataset_sampling import MultiDatasetSampleDataset
from shared.engines.sampler import ResumableBatchSampler
from shared.io.multi_datalist import read_multi_datalist, tasks_of
from shared.ssl.multitalent import MultiTalent, PadChannelsd
from tools._cli import run_cli


def _plain(sample: dict) -> dict:
    return {key: value.as_tensor() if hasattr(value, "as_tensor") else value for key, value in sample.items()}


def main(datalist: str, steps: int = 150, encoder: str = "resenc", preset: str = "tiny", patch: int = 32,
         batch_size: int = 4, learning_rate: float = 1e-2, seed: int = 0, threads: int = 1) -> dict:
    """Train and print the first- and last-fifth means.

    Args:
        datalist: the multi-dataset datalist.
        steps: training steps.
        encoder: resenc or plain; preset: its size preset.
        patch: cubic patch size (a multiple of the encoder's coarsest stride).
        batch_size: samples per step, data sets mixed.
        learning_rate: initial LR of the poly schedule.
        seed: sampling and initialisation seed.
        threads: torch CPU threads.

    Returns:
        ``{"<key>": [first-fifth mean, last-fifth mean]}`` for the loss and every ``loss/`` and ``dice/`` key.
    """
    torch.set_num_threads(int(threads))
    data = read_multi_datalist(datalist, check_files=True)
    tasks = tasks_of(data)
    chain = Compose([
        LoadImaged(["image", "label"], image_only=True), EnsureChannelFirstd(["image", "label"]),
        NormalizeIntensityd("image", channel_wise=True),
        PadChannelsd("image", max(task["in_channels"] for task in tasks)),
        RandSpatialCropd(["image", "label"], (patch,) * 3, random_size=False),
        CastToTyped(["image", "label"], [torch.float32, torch.long]), _plain,
    ])
    dataset = MultiDatasetSampleDataset(data["datasets"], chain, seed=seed)
    loader = DataLoader(dataset, batch_sampler=ResumableBatchSampler(batch_size))
    torch.manual_seed(seed)
    model = MultiTalent(tasks, encoder_spec={"name": encoder, "preset": preset})
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.99, nesterov=True,
                                weight_decay=3e-5)
    history, start = [], time.process_time()
    for step, batch in zip(range(steps), loader):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * (1 - step / steps) ** 0.9
        losses = model(batch["image"], batch["label"], batch["dataset"])
        optimizer.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12)
        optimizer.step()
        history.append({key: float(value.detach()) for key, value in losses.items()})
    fifth = max(steps // 5, 1)
    summary = {key: [_mean(history[:fifth], key), _mean(history[-fifth:], key)]
               for key in sorted({key for entry in history for key in entry})}
    print(f"{encoder} {preset}: {steps} steps, {time.process_time() - start:.0f} CPU s")
    for key, (first, last) in summary.items():
        print(f"{key:24s} {first:.3f} -> {last:.3f}")
    return summary


def _mean(entries: list[dict], key: str) -> float:
    values = [entry[key] for entry in entries if key in entry and not np.isnan(entry[key])]
    return float(np.mean(values)) if values else float("nan")


if __name__ == "__main__":
    run_cli(main)
