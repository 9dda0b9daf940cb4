"""Training batches and validation cases from the preprocessed cache.

Reads the cache with :func:`shared.data.cache.read_case`; images are memory-mapped, so a training sample
reads only the region its patch covers. Every training sample is a pure function of
``(seed, rank, epoch, index)``: a resumed run sees
the same data, DataLoader workers never repeat each other, and distributed ranks draw different samples
without a ``DistributedSampler``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.data.augment import (
    AugmentationSettings,
    augment_intensity,
    draw_spatial_matrix,
    extract_patch,
    transform_boxes,
)
from shared.data.cache import CachedCase, read_case
from shared.boxes.rasterize import rasterize_boxes
from shared.data.rasterize import rasterize_instances
from shared.data.sampling import boxes_of_patch_instances, choose_patch_origin, crop_boxes, is_foreground_sample
from shared.io.errors import InputError


def draw_training_sample(
    record: CachedCase,
    patch_size: tuple[int, int, int],
    rng: np.random.Generator,
    *,
    foreground: bool,
    augmentation: AugmentationSettings | None = None,
    min_visible_fraction: float = 0.5,
) -> dict[str, Any]:
    """One training patch of a case with its boxes, classes and segmentation target.

    Args:
        record: the case (see :func:`shared.data.cache.read_case`).
        patch_size: (PX, PY, PZ).
        rng: the sample's generator; every random choice comes from it.
        foreground: centre the patch on a random object (ignored for cases without objects).
        augmentation: settings, or ``None`` for plain crops.
        min_visible_fraction: for boxes-only cases, share of a box that must stay in the patch.

    Returns:
        ``{"image": (C, PX, PY, PZ) float32, "boxes": (N, 6) float32 xyzxyz voxel in the patch,
        "labels": (N,) int64, "seg": (1, PX, PY, PZ) int64 (0 background, class + 1), "case": id}``.
    """
    image, instance_map = record.image, record.mask
    matrix = None
    if augmentation is not None:
        may_rotate = instance_map is not None or augmentation.rotate_boxes_only_cases
        matrix = draw_spatial_matrix(augmentation, rng, allow_rotation=may_rotate)
    boxes = record.boxes if foreground else None
    origin = choose_patch_origin(record.shape, patch_size, rng, boxes=boxes, matrix=matrix)
    image_patch, map_patch = extract_patch(image, instance_map, origin, patch_size, matrix)
    if map_patch is not None:
        try:
            boxes, labels, ids = boxes_of_patch_instances(map_patch, record.instances, record.labels)
        except KeyError as missing:
            problem = f"instance ids {missing.args[0]} of the mask are not in 'instances'"
            raise InputError(record.source, problem) from None
        seg = rasterize_instances(map_patch, ids, labels)
    else:
        moved = transform_boxes(record.boxes, origin, patch_size, matrix)
        boxes, labels = crop_boxes(moved, record.labels, patch_size, min_visible_fraction=min_visible_fraction)
        seg = rasterize_boxes(boxes, patch_size, ids=np.asarray(labels) + 1, dtype=np.int64)
    if augmentation is not None:
        image_patch = augment_intensity(image_patch, augmentation, rng)
    return {
        "image": image_patch.to(torch.float32).contiguous(),
        "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
        "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        "seg": torch.from_numpy(seg[None].astype(np.int64, copy=False)),
        "case": record.case,
    }


def _patch_size(value: int | Sequence[int]) -> tuple[int, int, int]:
    size = (int(value),) * 3 if np.isscalar(value) else tuple(int(v) for v in value)
    if len(size) != 3 or min(size) < 2:
        raise ValueError(f"patch_size must be 3 sizes of at least 2 voxels, got {value!r}")
    return size


def _default_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


class DetectionPatchDataset(Dataset):
    """Random training patches from cached cases, ``iterations_per_epoch * batch_size`` per epoch.

    Sample ``index`` is batch ``index // batch_size``, position ``index % batch_size``, so iterate it in
    order (``DataLoader(dataset, batch_size=batch_size)``, no shuffling: the randomness is inside) for
    the per-batch foreground rule of :mod:`shared.data.sampling`. The case is drawn uniformly. Call
    :meth:`set_epoch` before each epoch; with ``persistent_workers=True`` workers keep the epoch they
    started with, so leave that off.

    Args:
        cache_dir: the preprocessed cache.
        cases: case ids to sample from.
        patch_size: (PX, PY, PZ) or one int for a cube.
        iterations_per_epoch: batches per epoch.
        batch_size: samples per batch (the foreground rule needs it).
        foreground_fraction: expected share of patches centred on an object.
        augmentation: :class:`~shared.data.augment.AugmentationSettings` overrides as a dict
            (``{}`` = all defaults), or ``None`` for no augmentation.
        seed: base seed; each sample's generator is seeded from ``(seed, rank, epoch, index)``.
        rank: distributed rank; by default the initialised process group's, else 0.
        min_visible_fraction: boxes-only cases keep a box with at least this share inside the patch.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        cases: Sequence[str],
        patch_size: int | Sequence[int],
        *,
        iterations_per_epoch: int,
        batch_size: int,
        foreground_fraction: float = 0.5,
        augmentation: dict[str, Any] | None = None,
        seed: int = 0,
        rank: int | None = None,
        min_visible_fraction: float = 0.5,
    ):
        if isinstance(cases, str):
            raise ValueError(f"cases must be a list of case ids, got the string {cases!r}")
        if not cases:
            raise InputError(cache_dir, "no cases to sample from")
        if iterations_per_epoch < 1 or batch_size < 1:
            raise ValueError(f"iterations_per_epoch and batch_size must be positive, "
                             f"got {iterations_per_epoch}, {batch_size}")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        for case in cases:  # fail now on a broken case, not in a worker mid-epoch
            read_case(cache_dir, case)
        # Cases are re-read per sample (json + memory maps): a pickled dataset (spawned workers) then
        # carries ids, not arrays.
        self.cache_dir, self.cases = Path(cache_dir), list(cases)
        self.patch_size = _patch_size(patch_size)
        self.iterations_per_epoch, self.batch_size = int(iterations_per_epoch), int(batch_size)
        self.foreground_fraction = float(foreground_fraction)
        self.augmentation = None if augmentation is None else AugmentationSettings.from_spec(augmentation)
        self.seed, self.rank = int(seed), _default_rank() if rank is None else int(rank)
        self.min_visible_fraction = float(min_visible_fraction)
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
        foreground = is_foreground_sample(index % self.batch_size, self.batch_size, self.foreground_fraction, rng)
        record = read_case(self.cache_dir, self.cases[int(rng.integers(len(self.cases)))])
        sample = draw_training_sample(
            record, self.patch_size, rng, foreground=foreground,
            augmentation=self.augmentation, min_visible_fraction=self.min_visible_fraction,
        )
        sample["foreground"] = foreground
        return sample


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
    int64, "affine": (4, 4) float64 RAS of the preprocessed grid, "case": id}``. Use ``batch_size=1``
    with ``collate_fn=lambda items: items[0]`` (cases differ in size).
    """

    def __init__(self, cache_dir: str | os.PathLike, cases: Sequence[str]):
        for case in cases:
            read_case(cache_dir, case)
        self.cache_dir, self.cases = Path(cache_dir), list(cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = read_case(self.cache_dir, self.cases[index], mmap=False)
        return {
            "image": torch.from_numpy(record.image.astype(np.float32, copy=False)),
            "boxes": torch.from_numpy(record.boxes.copy()),
            "labels": torch.from_numpy(record.labels.copy()),
            "affine": torch.from_numpy(record.affine.copy()),
            "case": record.case,
        }
