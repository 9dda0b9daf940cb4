"""Resampling a scan, its instance map and its boxes to a target spacing, in voxel index space.

The geometry, stated once: voxel edges scale by ``factor = spacing / target_spacing`` per axis and the
outer corner of the image (index-space edge 0) stays where it is in the world. A voxel-centre index
``j`` of the new grid lies at old voxel-centre index ``(j + 0.5) / factor - 0.5``; the new shape is
``floor(shape * factor)`` (the last partial voxel is dropped, never extrapolated). Because the
interpolation kernels are given the output size *and* the exact factor (PyTorch's ``aten`` upsampling
ops; ``F.interpolate`` can pass only one of the two), the new affine has exactly the target spacing,
the same direction and the same corner, and an index-space box edge ``e`` moves to ``e * factor``. So
``boxes_voxel_to_world(boxes, resampled_affine)`` gives the same world boxes as the original grid, with
no inverse mapping to get wrong.

The scan is interpolated trilinearly, the instance map by nearest neighbour ("nearest-exact", which
samples voxel centres; PyTorch's plain "nearest" is shifted by half a voxel).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from shared.boxes.convention import boxes_from_instance_mask

_SAME_SPACING = 1e-6  # mm; closer than this the grid is kept and no interpolation runs
# NIfTI stores affines in float32, so 20 voxels of "0.7 mm" make 13.9999998 voxels of 1 mm; a shape
# within this many voxels of an integer is rounded to it (the last sample then sits < 1e-3 voxel out)
_SHAPE_TOLERANCE = 1e-3
#: the most voxels a resampled scan may have per channel (16 GiB of float32): far above any real CT or
#: MRI at a sensible spacing, far below what a wrong spacing in a header asks for (1,000 mm voxels
#: resampled to 1 mm ask for terabytes)
MAX_VOXELS = 2**32


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel size (3,) in mm along the array axes of a (4, 4) affine."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def zoom_factors(spacing: Sequence[float], target_spacing: Sequence[float]) -> np.ndarray:
    """Per-axis factor (3,) by which index-space coordinates grow: ``spacing / target_spacing``."""
    return np.asarray(spacing, dtype=np.float64) / np.asarray(target_spacing, dtype=np.float64)


def needs_resampling(spacing: Sequence[float], target_spacing: Sequence[float]) -> bool:
    return bool(np.any(np.abs(np.asarray(spacing) - np.asarray(target_spacing)) > _SAME_SPACING))


def resampled_shape(shape: Sequence[int], factors: Sequence[float]) -> tuple[int, int, int]:
    """``floor(shape * factors)`` (robust to float rounding), as the interpolation computes it.

    Raises:
        ValueError: when an axis would be empty or the grid would hold more than :data:`MAX_VOXELS`.
    """
    new = tuple(int(math.floor(float(size) * float(factor) + _SHAPE_TOLERANCE)) for size, factor in zip(shape, factors))
    factors = tuple(round(float(factor), 6) for factor in factors)
    if min(new) < 1:
        raise ValueError(f"resampling shape {tuple(shape)} by {factors} leaves an empty axis")
    if math.prod(new) > MAX_VOXELS:
        raise ValueError(f"resampling shape {tuple(shape)} by {factors} gives {new}, more than {MAX_VOXELS} voxels")
    return new


def resampled_affine(affine: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """The (4, 4) affine of the resampled grid: same corner, same direction, spacing / factor."""
    step = 1.0 / np.asarray(factors, dtype=np.float64)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(step)
    index_map[:3, 3] = 0.5 * step - 0.5  # new centre j sits at old centre (j + 0.5) * step - 0.5
    return np.asarray(affine, dtype=np.float64) @ index_map


def resample_image(array: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Trilinear resampling of a scan.

    Args:
        array: (C, X, Y, Z) float32.
        factors: (3,) zoom factors from :func:`zoom_factors`.

    Returns:
        (C, X', Y', Z') float32 C-contiguous, ``(X', Y', Z') = resampled_shape((X, Y, Z), factors)``.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    size, scales = _size_and_scales(array.shape[1:], factors)
    with torch.no_grad():
        out = torch.ops.aten.upsample_trilinear3d.default(tensor, size, False, *scales)
    return out[0].numpy()


def resample_instance_map(mask: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Nearest-neighbour resampling of an integer instance map (X, Y, Z) → (X', Y', Z') int16."""
    if mask.max(initial=0) >= 2**24:  # the float32 detour is exact below 2**24
        raise ValueError("instance ids must be below 2**24")
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    size, scales = _size_and_scales(mask.shape, factors)
    with torch.no_grad():
        out = torch.ops.aten._upsample_nearest_exact3d.default(tensor, size, *scales)
    return out[0, 0].numpy().astype(np.int16)


def _size_and_scales(shape: Sequence[int], factors: Sequence[float]) -> tuple[list[int], list[float]]:
    return list(resampled_shape(shape, factors)), [float(factor) for factor in factors]


def scale_boxes(boxes: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Index-space xyzxyz boxes (N, 6) on the old grid → on the grid zoomed by ``factors`` (N, 6)."""
    factors = np.asarray(factors, dtype=np.float64)
    return (np.asarray(boxes, dtype=np.float64).reshape(-1, 6) * np.concatenate([factors, factors])).astype(np.float32)


def boxes_to_original_grid(boxes: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Inverse of :func:`scale_boxes`: (N, 6) boxes on the resampled grid → on the original grid.

    Writing world boxes needs neither: ``boxes_voxel_to_world(boxes, resampled_affine)`` is the same.
    """
    return scale_boxes(boxes, 1.0 / np.asarray(factors, dtype=np.float64))


def boxes_after_resampling(boxes: np.ndarray, factors: Sequence[float], *, mask: np.ndarray | None = None,
                           instances: Sequence[int] | None = None) -> np.ndarray:
    """Boxes (N, 6) on the resampled grid: from the resampled instance map where the object survived,
    else the scaled box (an object thinner than a new voxel can vanish from a nearest-neighbour map).

    Args:
        boxes: (N, 6) xyzxyz voxel boxes on the original grid.
        factors: (3,) zoom factors.
        mask: the *resampled* instance map (X', Y', Z'), or None for a boxes-only data set.
        instances: the mask id of each box row (N,), needed with ``mask``.

    Returns:
        (N, 6) float32 xyzxyz voxel boxes on the resampled grid.
    """
    scaled = scale_boxes(boxes, factors)
    if mask is None or not len(scaled):
        return scaled
    found, ids = boxes_from_instance_mask(mask)
    row_of = {int(instance): row for row, instance in enumerate(ids)}
    for row, instance in enumerate(instances):
        if int(instance) in row_of:
            scaled[row] = found[row_of[int(instance)]]
    return scaled
