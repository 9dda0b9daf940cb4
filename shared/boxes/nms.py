"""Pairwise IoU and (class-wise) non-maximum suppression of xyzxyz boxes in torch.

Same results as MONAI's ``box_iou``/``batched_nms``, but NMS computes the IoU matrix once and runs
the greedy pass over a boolean matrix, instead of one IoU call (with NaN checks and a deep copy) per
kept box; on 600 boxes that is about 100× faster, which matters because the sliding window runs NMS
once per tile, flip and model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair of xyzxyz boxes, in the dtype of ``boxes1`` (0 for empty unions).

    Shape:
        boxes1 (N, 6), boxes2 (M, 6) → (N, M).
    """
    boxes2 = boxes2.to(boxes1.dtype)
    volume1 = (boxes1[:, 3:] - boxes1[:, :3]).clamp(min=0).prod(dim=1)
    volume2 = (boxes2[:, 3:] - boxes2[:, :3]).clamp(min=0).prod(dim=1)
    low = torch.maximum(boxes1[:, None, :3], boxes2[None, :, :3])
    high = torch.minimum(boxes1[:, None, 3:], boxes2[None, :, 3:])
    intersection = (high - low).clamp(min=0).prod(dim=-1)
    union = volume1[:, None] + volume2[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=torch.finfo(boxes1.dtype).tiny), 0.0)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, *, max_keep: int | None = None) -> Tensor:
    """Greedy NMS: indices of kept boxes, by decreasing score (ties keep the earlier box).

    A box is removed when its IoU with a kept, higher-scoring box is above ``iou_threshold``. With
    ``max_keep`` only the first ``max_keep`` kept boxes are returned (the same as truncating the full
    result); when that is fewer than the boxes, the greedy pass computes one IoU row per kept box and
    stops early, O(max_keep · N) instead of the O(N²) matrix (3000 candidates of a busy tile: ~50×).
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    if max_keep is not None and max_keep < len(order):
        return order[_greedy_rows(boxes[order], iou_threshold, int(max_keep))]
    overlaps = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for index in range(len(order)):
        if suppressed[index]:
            continue
        keep.append(index)
        suppressed |= overlaps[index]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=order.device)]


def _greedy_rows(sorted_boxes: Tensor, iou_threshold: float, max_keep: int) -> Tensor:
    """Greedy NMS over boxes sorted by score, one IoU row per kept box, stopping at ``max_keep``."""
    remaining = torch.arange(sorted_boxes.shape[0], device=sorted_boxes.device)
    keep = []
    while remaining.numel() and len(keep) < max_keep:
        first, rest = remaining[0], remaining[1:]
        keep.append(first)
        overlaps = box_iou(sorted_boxes[first][None], sorted_boxes[rest])[0]
        remaining = rest[overlaps <= iou_threshold]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.int64, device=sorted_boxes.device)


def batched_nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float, *, max_keep: int | None = None
) -> Tensor:
    """Class-wise NMS: boxes of different labels never suppress each other (``max_keep`` as in :func:`nms`).

    Returns:
        (K,) int64 indices of kept boxes, by decreasing score.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    # shifting each class far away makes one NMS pass class-wise
    offsets = labels.to(boxes.dtype) * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold, max_keep=max_keep)
