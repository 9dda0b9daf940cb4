"""Fitting the per-axis anchor sizes to the training boxes (the planner's step, nnDetection style).

The objective is the mean, over training boxes, of the best IoU between the box and any anchor of any
level, both centred at the same point (only shapes matter: the anchor grid is dense). A coordinate
search on the 9 sizes (3 per axis) with shrinking multiplicative steps maximises it; it is
deterministic, needs no gradient and takes a few seconds for 2,000 boxes and 4 levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.detectors.anchors import anchor_shapes, level_strides


def centred_iou(box_shapes: np.ndarray, anchor_shapes_: np.ndarray) -> np.ndarray:
    """IoU of boxes and anchors sharing a centre.

    Shape:
        box_shapes (N, 3), anchor_shapes_ (M, 3) → (N, M).
    """
    inter = np.prod(np.minimum(box_shapes[:, None, :], anchor_shapes_[None, :, :]), axis=-1)
    union = np.prod(box_shapes, axis=1)[:, None] + np.prod(anchor_shapes_, axis=1)[None, :] - inter
    return inter / union


def mean_best_iou(box_shapes: np.ndarray, anchor_sizes: Sequence[Sequence[float]],
                  strides: Sequence[int | Sequence[int]]) -> float:
    """Mean over boxes of the best centred IoU with any anchor of any level.

    Args:
        box_shapes: (N, 3) box widths, heights, depths in voxels.
        anchor_sizes: per-axis sizes at the first level (see :mod:`shared.detectors.anchors`).
        strides: detection strides, fine → coarse (ints, or one per axis).
    """
    base = anchor_shapes(anchor_sizes)
    axis_strides = level_strides(strides)
    scales = axis_strides / axis_strides[0]  # (L, 3): anchors grow per axis with the level's stride
    all_shapes = np.concatenate([base * s for s in scales], axis=0)
    return float(centred_iou(np.asarray(box_shapes, dtype=np.float64), all_shapes).max(axis=1).mean())


def fit_anchor_sizes(
    boxes: np.ndarray,
    strides: Sequence[int | Sequence[int]],
    *,
    sizes_per_axis: int = 3,
    rounds: int = 6,
    max_boxes: int = 2000,
    min_size: float = 1.0,
    seed: int = 0,
) -> list[list[float]]:
    """Per-axis anchor sizes at the first detection level maximising the mean best IoU.

    Args:
        boxes: (N, 6) xyzxyz voxel training boxes at the training spacing.
        strides: detection strides, fine → coarse (ints, or one per axis); level ``l`` uses sizes ×
            stride_l / stride_0 per axis.
        sizes_per_axis: sizes per axis (3 gives the 27 anchors of the Retina U-Net).
        rounds: coordinate-search rounds; the step factor halves (in log space) every round.
        max_boxes: boxes used for the objective (a seeded random subset beyond that).
        min_size: smallest allowed size (voxels).
        seed: seed of the subset.

    Returns:
        ``[[w…], [h…], [d…]]`` plain floats (sorted per axis), ready for a bundle config.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    if not len(boxes):
        raise ValueError("fit_anchor_sizes needs at least one training box")
    shapes = np.maximum(boxes[:, 3:] - boxes[:, :3], 1e-3)
    if len(shapes) > max_boxes:
        shapes = shapes[np.random.default_rng(seed).choice(len(shapes), max_boxes, replace=False)]
    sizes = _initial_sizes(shapes, strides, sizes_per_axis, min_size)
    best = mean_best_iou(shapes, sizes, strides)
    step = 2.0
    for _ in range(rounds):
        for axis in range(3):
            for index in range(sizes_per_axis):
                sizes, best = _improve_one(shapes, sizes, strides, axis, index, step, best, min_size)
        step = float(np.sqrt(step))
    return [sorted(round(float(v), 3) for v in axis) for axis in sizes]


def _initial_sizes(shapes: np.ndarray, strides: Sequence[int | Sequence[int]], count: int,
                   min_size: float) -> list[list[float]]:
    """Sizes spread geometrically over one octave from the smallest boxes' size, per axis.

    Each coarser level doubles the anchors (for stride ratios of 2), so one octave at the finest
    level makes the levels tile the size range without gaps; the search then moves them.
    """
    sizes = []
    for axis in range(3):
        smallest = max(float(np.quantile(shapes[:, axis], 0.05)), min_size)
        sizes.append([float(v) for v in np.geomspace(smallest, 2 * smallest, count + 1)[:-1]])
    return sizes


def _improve_one(shapes, sizes, strides, axis, index, step, best, min_size):
    """Try multiplying one size by step^t for a few t; keep the best."""
    for factor in (step, 1.0 / step, step**0.5, step**-0.5):
        trial = [list(a) for a in sizes]
        trial[axis][index] = max(trial[axis][index] * factor, min_size)
        score = mean_best_iou(shapes, trial, strides)
        if score > best + 1e-9:
            sizes, best = trial, score
    return sizes, best
