"""NumPy box operations: ``cccwhd`` <-> xyzxyz conversion and pairwise 3-D IoU.

Boxes are ``(N, 6)`` float arrays. xyzxyz is MONAI's ``StandardMode`` ``(x1, y1, z1, x2, y2, z2)``;
``cccwhd`` is ``(cx, cy, cz, w, h, d)``, the mode of the project's files (world millimetres). IoU is
unchanged by axis-aligned scaling and shifts, so it may be computed in millimetres or voxels alike.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "cccwhd_to_xyzxyz",
    "xyzxyz_to_cccwhd",
    "box_volumes",
    "pairwise_iou_3d",
    "batched_pairwise_iou_3d",
]


def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, 6)
    if array.ndim != 2 or array.shape[1] != 6:
        raise ValueError(f"{name} must have shape (N, 6), got {array.shape}.")
    return array


def cccwhd_to_xyzxyz(boxes: np.ndarray) -> np.ndarray:
    """Convert centre/size boxes to corner boxes.

    Args:
        boxes: boxes in ``cccwhd`` mode.

    Returns:
        the same boxes in xyzxyz mode, float64.

    Shape:
        ``(N, 6)`` -> ``(N, 6)``.
    """
    array = _as_boxes(boxes, "boxes")
    half_size = array[:, 3:] / 2.0
    return np.concatenate([array[:, :3] - half_size, array[:, :3] + half_size], axis=1)


def xyzxyz_to_cccwhd(boxes: np.ndarray) -> np.ndarray:
    """Convert corner boxes to centre/size boxes.

    Args:
        boxes: boxes in xyzxyz mode.

    Returns:
        the same boxes in ``cccwhd`` mode, float64.

    Shape:
        ``(N, 6)`` -> ``(N, 6)``.
    """
    array = _as_boxes(boxes, "boxes")
    return np.concatenate([(array[:, :3] + array[:, 3:]) / 2.0, array[:, 3:] - array[:, :3]], axis=1)


def box_volumes(boxes: np.ndarray) -> np.ndarray:
    """Volume of each xyzxyz box; a box with a negative side has volume 0.

    Args:
        boxes: boxes in xyzxyz mode.

    Returns:
        volumes, float64.

    Shape:
        ``(N, 6)`` -> ``(N,)``.
    """
    array = _as_boxes(boxes, "boxes")
    return np.prod(np.clip(array[:, 3:] - array[:, :3], 0.0, None), axis=1)


def pairwise_iou_3d(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair of xyzxyz boxes.

    Same definition as ``monai.data.box_utils.box_iou`` (intersection volume over union volume), computed
    in float64 and without MONAI's epsilon in the denominator; a pair whose union is empty (both boxes
    of zero size) has IoU 0.

    Args:
        boxes1: boxes in xyzxyz mode.
        boxes2: boxes in xyzxyz mode.

    Returns:
        IoU of ``boxes1[i]`` and ``boxes2[j]`` at ``[i, j]``, float64 in [0, 1].

    Shape:
        ``(N, 6)`` and ``(M, 6)`` -> ``(N, M)``.
    """
    first = _as_boxes(boxes1, "boxes1")
    second = _as_boxes(boxes2, "boxes2")
    return batched_pairwise_iou_3d(first[None], second[None])[0]


def batched_pairwise_iou_3d(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU within each item of a batch, same definition as :func:`pairwise_iou_3d`.

    Args:
        boxes1: xyzxyz boxes, one set per batch item (padding rows may hold any finite value).
        boxes2: xyzxyz boxes, one set per batch item.

    Returns:
        IoU of ``boxes1[b, i]`` and ``boxes2[b, j]`` at ``[b, i, j]``, float64.

    Shape:
        ``(B, N, 6)`` and ``(B, M, 6)`` -> ``(B, N, M)``.
    """
    first = np.asarray(boxes1, dtype=np.float64)
    second = np.asarray(boxes2, dtype=np.float64)
    # One spatial axis at a time with in-place updates: a few (B, N, M) buffers instead of (B, N, M, 3).
    intersection = None
    for axis in range(3):
        low1, high1 = np.ascontiguousarray(first[..., axis]), np.ascontiguousarray(first[..., axis + 3])
        low2, high2 = np.ascontiguousarray(second[..., axis]), np.ascontiguousarray(second[..., axis + 3])
        overlap = np.minimum(high1[:, :, None], high2[:, None, :])
        overlap -= np.maximum(low1[:, :, None], low2[:, None, :])
        np.maximum(overlap, 0.0, out=overlap)
        intersection = overlap if intersection is None else np.multiply(intersection, overlap, out=intersection)
    volume1 = np.prod(np.maximum(first[..., 3:] - first[..., :3], 0.0), axis=2)
    volume2 = np.prod(np.maximum(second[..., 3:] - second[..., :3], 0.0), axis=2)
    union = volume1[:, :, None] + volume2[:, None, :]
    union -= intersection
    iou = np.zeros_like(intersection)
    np.divide(intersection, union, out=iou, where=union > 0)
    return iou
