"""Semantic targets for the auxiliary segmentation head: 0 background, class + 1 inside objects.

From an instance map the target is exact; a data set with boxes only gets its boxes painted instead,
by the one box painter :func:`shared.boxes.rasterize.rasterize_boxes` with ``ids=labels + 1`` (a box
covers more than its object, which is why masks win whenever a case has one).
"""

from __future__ import annotations

import numpy as np


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
