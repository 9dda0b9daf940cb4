"""VoCo's crops: a grid of base crops tiling a region of one volume, random target crops, their overlaps.

VoCo (Wu et al., CVPR 2024) teaches an encoder where a crop lies by asking it to predict, from features
alone, how much of a random *target* crop falls into each *base* crop of a fixed grid. This module draws
the crops and computes the labels; :mod:`shared.ssl.voco` holds the model and the loss.

All crops have the same size, so the overlap of two crops on one axis is ``max(0, size - |a - b|)`` for
start corners ``a`` and ``b``, and the label of a target crop against a base crop is the product over
axes divided by the crop volume. A target crop inside the region is covered exactly by the base grid,
so its labels sum to 1; with ``target_margin`` > 0 it may leave the region and its labels sum to less.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import MAX_SEED, convert_to_tensor

from shared.layers import per_axis

#: default output keys of :class:`VoCoCropsd`
BASE_KEY, TARGET_KEY, OVERLAP_KEY = "base_crops", "target_crops", "overlaps"
BASE_POSITIONS_KEY, TARGET_POSITIONS_KEY = "base_positions", "target_positions"


def base_grid_starts(base_counts: Sequence[int], crop_size: Sequence[int]) -> np.ndarray:
    """Start corners of the base crops tiling the region, in C order (the last axis varies fastest).

    Args:
        base_counts: crops per axis.
        crop_size: crop edge per axis in voxels.

    Returns:
        (N_base, 3) int64 start corners relative to the region's origin; N_base = prod(base_counts).
    """
    axes = [np.arange(count) * size for count, size in zip(base_counts, crop_size)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(base_counts)).astype(np.int64)


def overlap_fractions(target_starts: np.ndarray, base_starts: np.ndarray, crop_size: Sequence[int]) -> np.ndarray:
    """Fraction of each target crop's volume that lies inside each base crop (all crops one size).

    Args:
        target_starts: start corners of the target crops.
        base_starts: start corners of the base crops, in the same frame.
        crop_size: crop edge per axis in voxels.

    Returns:
        (N_target, N_base) float32 labels in [0, 1].

    Shape:
        target_starts: (N_target, D); base_starts: (N_base, D).
    """
    size = np.asarray(crop_size, dtype=np.int64)
    offsets = np.abs(np.asarray(target_starts)[:, None, :] - np.asarray(base_starts)[None, :, :])
    lengths = np.clip(size - offsets, 0, None)
    return (lengths.prod(axis=-1) / size.prod()).astype(np.float32)


def _margin_per_axis(value: int | Sequence[int]) -> np.ndarray:
    """Three non-negative ints from an int or a per-axis sequence (``per_axis`` wants positive ones)."""
    values = list(value) if isinstance(value, Sequence) else [value] * 3
    if len(values) != 3 or any(isinstance(v, bool) or int(v) != v or v < 0 for v in values):
        raise ValueError(f"target_margin: expected a non-negative integer or 3 of them (one per axis), got {value!r}")
    return np.asarray(values, dtype=np.int64)


class VoCoCropsd(Randomizable, MapTransform):
    """Cuts one volume into VoCo's base and target crops and labels their overlaps.

    The region (``base_counts * crop_size`` voxels) is placed at random inside the volume, padded first
    where the volume is smaller (with room for ``target_margin`` on each side). Its base crops tile it;
    ``num_targets`` target crops start anywhere that keeps them within ``target_margin`` voxels of it.
    Each crop may then pass through ``crop_transform`` on its own (VoCo flips and rotates every crop
    independently).

    Args:
        keys: the one image key, e.g. ``"image"``; the image is (C, X, Y, Z).
        base_counts: base crops per axis; VoCo's 4×4×1 by default.
        crop_size: crop edge in voxels, one int or one per axis.
        num_targets: target crops per volume.
        target_margin: how far (voxels, an int or one per axis) a target crop may reach past the
            region; 0 keeps it inside, so its labels sum to 1.
        crop_transform: an array transform ``(C, X, Y, Z) -> (C, X, Y, Z)`` applied to every crop
            independently, e.g. a ``monai.transforms.Compose`` of ``RandFlip`` / ``RandRotate90``; its
            random state is seeded from this transform's.
        pad_value: value of the padding for volumes smaller than the region (z-scored images: 0).
        keep_source: keep the source image in the output; it is dropped by default because volumes of
            different sizes cannot be batched, and the base crops tile the region anyway.
        base_key, target_key, overlap_key, base_positions_key, target_positions_key: output keys.
        allow_missing_keys: MONAI's flag.

    Output keys:
        ``base_key``: (N_base, C, *crop_size); ``target_key``: (N_target, C, *crop_size);
        ``overlap_key``: (N_target, N_base) float32 labels; ``base_positions_key`` /
        ``target_positions_key``: (N, 3) int64 start corners relative to the region's origin.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        *,
        base_counts: Sequence[int] = (4, 4, 1),
        crop_size: int | Sequence[int] = 64,
        num_targets: int = 4,
        target_margin: int | Sequence[int] = 0,
        crop_transform: Callable[[Any], Any] | None = None,
        pad_value: float = 0.0,
        keep_source: bool = False,
        base_key: str = BASE_KEY,
        target_key: str = TARGET_KEY,
        overlap_key: str = OVERLAP_KEY,
        base_positions_key: str = BASE_POSITIONS_KEY,
        target_positions_key: str = TARGET_POSITIONS_KEY,
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"VoCoCropsd cuts one image, got keys {self.keys}; list one key")
        self.base_counts = np.asarray(per_axis(base_counts, 3, "base_counts"), dtype=np.int64)
        self.crop_size = np.asarray(per_axis(crop_size, 3, "crop_size"), dtype=np.int64)
        self.target_margin = _margin_per_axis(target_margin)
        if num_targets < 1:
            raise ValueError(f"num_targets must be at least 1, got {num_targets}")
        self.num_targets = int(num_targets)
        self.region_size = self.base_counts * self.crop_size
        self.base_starts = base_grid_starts(self.base_counts, self.crop_size)
        self.crop_transform, self.pad_value, self.keep_source = crop_transform, float(pad_value), keep_source
        self.output_keys = (base_key, target_key, overlap_key, base_positions_key, target_positions_key)
        self.region_start = np.zeros(3, dtype=np.int64)
        self.target_starts = np.zeros((self.num_targets, 3), dtype=np.int64)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> VoCoCropsd:
        """Seeds this transform and, from it, ``crop_transform`` (so one seed fixes every crop)."""
        super().set_random_state(seed, state)
        if isinstance(self.crop_transform, Randomizable):
            self.crop_transform.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        """Draws the region's place in a (padded) volume and the target crops' start corners.

        Args:
            spatial_shape: (X, Y, Z) of the volume after padding.
        """
        low = self.target_margin
        high = np.asarray(spatial_shape) - self.region_size - self.target_margin
        self.region_start = np.array([self.R.randint(a, b + 1) for a, b in zip(low, high)], dtype=np.int64)
        target_high = self.region_size - self.crop_size + self.target_margin
        self.target_starts = np.stack(
            [self.R.randint(-margin, top + 1, size=self.num_targets) for margin, top in zip(low, target_high)],
            axis=-1,
        ).astype(np.int64)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = convert_to_tensor(d[key], track_meta=False)
            if image.ndim != 4:
                raise ValueError(f"VoCoCropsd expects '{key}' as (C, X, Y, Z), got shape {tuple(image.shape)}")
            image = self._pad(image)
            self.randomize(image.shape[1:])
            origin = self.region_start
            base = torch.stack([self._crop(image, origin + start) for start in self.base_starts])
            target = torch.stack([self._crop(image, origin + start) for start in self.target_starts])
            overlaps = overlap_fractions(self.target_starts, self.base_starts, self.crop_size)
            values = (base, target, torch.from_numpy(overlaps), torch.from_numpy(self.base_starts.copy()),
                      torch.from_numpy(self.target_starts.copy()))
            d.update(zip(self.output_keys, values))
            if not self.keep_source:
                del d[key]
        return d

    def _pad(self, image: torch.Tensor) -> torch.Tensor:
        """Pads symmetrically (like ``SpatialPad``) to fit the region and its margins."""
        missing = np.clip(self.region_size + 2 * self.target_margin - np.asarray(image.shape[1:]), 0, None)
        if not missing.any():
            return image
        widths = []
        for gap in missing[::-1]:  # F.pad lists the last axis first
            widths += [int(gap // 2), int(gap - gap // 2)]
        return torch.nn.functional.pad(image, widths, value=self.pad_value)

    def _crop(self, image: torch.Tensor, start: np.ndarray) -> torch.Tensor:
        slices = tuple(slice(int(a), int(a + size)) for a, size in zip(start, self.crop_size))
        crop = image[(slice(None), *slices)].clone()
        if self.crop_transform is not None:
            crop = convert_to_tensor(self.crop_transform(crop), track_meta=False)
        return crop
