"""Boxes to voxels: which voxels a box covers, and a map painted from boxes.

The one place where a box becomes voxels. Used where a data set has only boxes but a mask is needed
(foreground statistics, nnDetection export, segmentation targets). A voxel belongs to a box when its
centre (``index + 0.5`` in index space) lies inside the box; a box thinner than a voxel along an axis
still marks the voxel holding its centre, so no box inside the grid vanishes, and a box from
:func:`shared.boxes.convention.boxes_from_instance_mask` paints back exactly the voxels of its hull.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def box_slices(box: Sequence[float], shape: Sequence[int]) -> tuple[slice, slice, slice] | None:
    """The voxel slices a xyzxyz index-space box covers, clipped to ``shape`` (X, Y, Z).

    Returns:
        One slice per axis, or ``None`` when the box lies wholly outside the grid.
    """
    box = np.asarray(box, dtype=np.float64)
    slices = []
    for axis in range(3):
        low, high = box[axis], box[axis + 3]
        start, stop = math.ceil(low - 0.5), math.ceil(high - 0.5)
        if stop <= start:
            start = math.floor((low + high) / 2)
            stop = start + 1
        start, stop = max(start, 0), min(stop, int(shape[axis]))
        if stop <= start:
            return None
        slices.append(slice(start, stop))
    return tuple(slices)


def rasterize_boxes(boxes: np.ndarray, shape: Sequence[int], *, ids: Sequence[int] | None = None,
                    dtype=np.int16) -> np.ndarray:
    """Paint boxes into a map; larger boxes first so a small box inside a large one stays visible.

    Args:
        boxes: (N, 6) xyzxyz voxel boxes; parts outside ``shape`` are ignored.
        shape: (X, Y, Z) of the map.
        ids: the value painted for each box (N,), default ``1..N`` in row order.
        dtype: the map's dtype.

    Returns:
        (X, Y, Z) map, 0 where no box is.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    ids = np.arange(1, len(boxes) + 1) if ids is None else np.asarray(ids).reshape(-1)
    if len(ids) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(ids)} ids")
    volume = np.prod(boxes[:, 3:] - boxes[:, :3], axis=1)
    out = np.zeros(tuple(shape), dtype=dtype)
    for row in np.argsort(-volume, kind="stable"):
        slices = box_slices(boxes[row], shape)
        if slices is not None:
            out[slices] = ids[row]
    return out
