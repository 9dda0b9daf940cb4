"""Semantic targets for the auxiliary segmentation head: 0 background, class + 1 inside objects.

From an instance map the target is exact; a data set with boxes only gets its boxes painted instead
(a box covers more than its object, which is why masks win whenever a case has one).
"""

from __future__ import annotations

import math

import numpy as np


def rasterize_boxes(boxes: np.ndarray, labels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Paint boxes into a semantic map.

    A voxel belongs to a box when its centre (``index + 0.5`` in index space) lies inside the box; a box
    thinner than a voxel along an axis still marks the voxel that holds its centre, so no box vanishes.
    Boxes are painted largest first, so where boxes overlap the smaller one shows.

    Args:
        boxes: (N, 6) xyzxyz voxel boxes (index-space edges); parts outside ``shape`` are ignored.
        labels: (N,) classes 0..C-1.
        shape: (X, Y, Z) of the map.

    Returns:
        (X, Y, Z) int64 map: 0 background, ``label + 1`` inside boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    target = np.zeros(tuple(shape), dtype=np.int64)
    volumes = np.prod(boxes[:, 3:] - boxes[:, :3], axis=1)
    for row in np.argsort(-volumes, kind="stable"):
        slices = _voxel_slices(boxes[row], target.shape)
        if slices is not None:
            target[slices] = labels[row] + 1
    return target


def _voxel_slices(box: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    slices = []
    for axis, size in enumerate(shape):
        low, high = box[axis], box[axis + 3]
        start, stop = math.ceil(low - 0.5), math.ceil(high - 0.5)
        if stop <= start:
            start = math.floor((low + high) / 2)
            stop = start + 1
        start, stop = max(start, 0), min(stop, size)
        if stop <= start:
            return None
        slices.append(slice(start, stop))
    return tuple(slices)


def rasterize_instances(instance_map: np.ndarray, instance_ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Semantic map of an instance map: every voxel of instance ``instance_ids[i]`` gets ``labels[i] + 1``.

    Args:
        instance_map: (X, Y, Z) integer map, 0 background.
        instance_ids: (N,) ids present in the map.
        labels: (N,) their classes.

    Returns:
        (X, Y, Z) int64 map; ids not listed count as background.
    """
    instance_map = np.asarray(instance_map).astype(np.int64, copy=False)
    instance_ids = np.asarray(instance_ids, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not len(instance_ids):
        return np.zeros(instance_map.shape, dtype=np.int64)
    lookup = np.zeros(max(int(instance_ids.max()), int(instance_map.max(initial=0))) + 1, dtype=np.int64)
    lookup[instance_ids] = labels + 1
    return lookup[np.clip(instance_map, 0, None)]
