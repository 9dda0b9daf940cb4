"""Boxes to voxels: which voxels a box covers, and an instance map painted from boxes.

Used where a data set has only boxes but a mask is needed (foreground statistics, nnDetection export,
segmentation targets). An index-space edge is rounded to the nearest voxel border, and every box covers
at least one voxel per axis, so a box from :func:`shared.boxes.convention.boxes_from_instance_mask`
paints back exactly the voxels of its hull.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def box_slices(box: Sequence[float], shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """The voxel slices a xyzxyz index-space box covers, clipped to ``shape`` (X, Y, Z)."""
    box = np.asarray(box, dtype=np.float64)
    slices = []
    for axis in range(3):
        start = int(np.clip(np.floor(box[axis] + 0.5), 0, shape[axis] - 1))
        stop = int(np.clip(np.floor(box[axis + 3] + 0.5), start + 1, shape[axis]))
        slices.append(slice(start, stop))
    return tuple(slices)


def rasterize_boxes(boxes: np.ndarray, shape: Sequence[int], *, ids: Sequence[int] | None = None,
                    dtype=np.int16) -> np.ndarray:
    """Paint boxes into an instance map; larger boxes first so a small box inside a large one stays visible.

    Args:
        boxes: (N, 6) xyzxyz voxel boxes.
        shape: (X, Y, Z) of the map.
        ids: the value painted for each box (N,), default ``1..N`` in row order.

    Returns:
        (X, Y, Z) instance map, 0 where no box is.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    ids = np.arange(1, len(boxes) + 1) if ids is None else np.asarray(ids)
    volume = np.prod(boxes[:, 3:] - boxes[:, :3], axis=1)
    out = np.zeros(tuple(shape), dtype=dtype)
    for row in np.argsort(-volume, kind="stable"):
        out[box_slices(boxes[row], shape)] = ids[row]
    return out
