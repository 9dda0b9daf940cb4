"""Semantic targets for the auxiliary segmentation head: 0 background, class + 1 inside objects.

From an instance map the target is exact; a data set with boxes only gets its boxes painted instead
(a box covers more than its object, which is why masks win whenever a case has one).
"""

from __future__ import annotations

import numpy as np

from shared.boxes import rasterize as box_rasterize


def rasterize_boxes(boxes: np.ndarray, labels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Paint boxes into a semantic map (voxel rule: :func:`shared.boxes.rasterize.box_slices`).

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
    return box_rasterize.rasterize_boxes(boxes, shape, ids=labels + 1, dtype=np.int64)


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
