"""Training batches and validation cases from the preprocessed cache.

Reads the cache with :func:`shared.data.cache.read_case`; images are memory-mapped, so a training sample
reads only the region its patch covers. The training sample is whatever the bundle's
``train#preprocessing`` chain makes of a cached case (patch sampling, augmentation with boxes
following: :mod:`shared.data.transforms_sampling`, :mod:`shared.data.transforms_spatial` and any MONAI
transform). Every sample is a pure function of ``(seed, rank, epoch, index)``: the case is drawn from it
and the chain's random state is set from it before the chain runs, so a resumed run sees the same data
(the ``ResumableBatchSampler`` contract), DataLoader workers never repeat each other, and distributed
ranks draw different samples without a ``DistributedSampler``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from monai.transforms import Randomizable
from torch.utils.data import Dataset

from shared.data.cache import read_case
from shared.io.errors import InputError


def _default_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def _plain_tensor(value: Any) -> Any:
    """MONAI transforms may return a ``MetaTensor``; the batch holds plain tensors (the trainer's contract)."""
    return value.as_tensor() if hasattr(value, "as_tensor") else value


class DetectionPatchDataset(Dataset):
    """Training samples from cached cases, ``iterations_per_epoch * batch_size`` per epoch.

    Sample ``index`` is batch ``index // batch_size``, position ``index % batch_size`` (handed to the
    chain as ``batch_position``, for the per-batch foreground rule of :mod:`shared.data.sampling`), so
    iterate it in order (``DataLoader(dataset, batch_size=batch_size)``, no shuffling: the randomness
    is inside). The case is drawn uniformly. Call :meth:`set_epoch` before each epoch; with
    ``persistent_workers=True`` workers keep the epoch they started with, so leave that off.

    The chain receives ``{"image": (C, X, Y, Z) memory map, "mask": (X, Y, Z) int16 or None, "boxes":
    (N, 6) xyzxyz voxel, "labels": (N,), "instances": (N,) or None, "case", "source",
    "batch_position"}``.

    Args:
        cache_dir: the preprocessed cache (the keyed folder holding the cases).
        cases: case ids to sample from.
        transform: the sample chain (``train#preprocessing``); its random state is reseeded per sample.
        iterations_per_epoch: batches per epoch.
        batch_size: samples per batch.
        seed: base seed; each sample is seeded from ``(seed, rank, epoch, index)``.
        rank: distributed rank; by default the initialised process group's, else 0.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        cases: Sequence[str],
        transform: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        iterations_per_epoch: int,
        batch_size: int,
        seed: int = 0,
        rank: int | None = None,
    ):
        if isinstance(cases, str):
            raise ValueError(f"cases must be a list of case ids, got the string {cases!r}")
        if not cases:
            raise InputError(cache_dir, "no cases to sample from")
        if iterations_per_epoch < 1 or batch_size < 1:
            raise ValueError(f"iterations_per_epoch and batch_size must be positive, "
                             f"got {iterations_per_epoch}, {batch_size}")
        for case in cases:  # fail now on a broken case, not in a worker mid-epoch
            read_case(cache_dir, case)
        # Cases are re-read per sample (json + memory maps): a pickled dataset (spawned workers) then
        # carries ids, not arrays.
        self.cache_dir, self.cases, self.transform = Path(cache_dir), list(cases), transform
        self.iterations_per_epoch, self.batch_size = int(iterations_per_epoch), int(batch_size)
        self.seed, self.rank = int(seed), _default_rank() if rank is None else int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.iterations_per_epoch * self.batch_size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            raise IndexError(f"sample indices start at 0, got {index}")
        # an index past the epoch continues into the next epochs: the trainer's ResumableBatchSampler
        # hands out global indices so a resumed run sees the same samples
        epoch, index = divmod(int(index), len(self))
        rng = np.random.default_rng([self.seed, self.rank, self.epoch + epoch, index])
        record = read_case(self.cache_dir, self.cases[int(rng.integers(len(self.cases)))])
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed=int(rng.integers(2**31 - 1)))
        data = {"image": record.image, "mask": record.mask, "boxes": record.boxes, "labels": record.labels,
                "instances": record.instances, "case": record.case, "source": record.source,
                "batch_position": index % self.batch_size}
        sample = self.transform(data)
        return {key: _plain_tensor(value) for key, value in sample.items()}


def collate_detection(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and targets; boxes and labels stay lists because their counts differ.

    Returns:
        ``{"image": (B, C, X, Y, Z), "boxes": [(N_i, 6)], "labels": [(N_i,)], "seg": (B, 1, X, Y, Z),
        "case": [ids]}`` plus any other key as a list.
    """
    batch: dict[str, Any] = {
        "image": torch.stack([s["image"] for s in samples]),
        "boxes": [s["boxes"] for s in samples],
        "labels": [s["labels"] for s in samples],
        "seg": torch.stack([s["seg"] for s in samples]),
    }
    for key in samples[0]:
        if key not in batch:
            batch[key] = [s[key] for s in samples]
    return batch


class ValidationCaseDataset(Dataset):
    """Whole cached cases for sliding-window validation.

    Each item: ``{"image": (C, X, Y, Z) float32, "boxes": (N, 6) float32 xyzxyz voxel, "labels": (N,)
    int64, "affine": (4, 4) float64 RAS of the preprocessed grid, "case": id}``, then ``transform``
    (``validate#preprocessing``) if given. Use ``batch_size=1`` with ``collate_fn=lambda items:
    items[0]`` (cases differ in size).
    """

    def __init__(self, cache_dir: str | os.PathLike, cases: Sequence[str],
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        for case in cases:
            read_case(cache_dir, case)
        self.cache_dir, self.cases, self.transform = Path(cache_dir), list(cases), transform

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = read_case(self.cache_dir, self.cases[index], mmap=False)
        item = {
            "image": torch.from_numpy(record.image.astype(np.float32, copy=False)),
            "boxes": torch.from_numpy(record.boxes.copy()),
            "labels": torch.from_numpy(record.labels.copy()),
            "affine": torch.from_numpy(record.affine.copy()),
            "case": record.case,
        }
        if self.transform is not None:
            item = {key: _plain_tensor(value) for key, value in self.transform(item).items()}
        return item
