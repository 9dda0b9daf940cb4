"""Boxes normalised to a patch, the form set-prediction detectors (Deformable DETR) predict and match.

A normalised box is ``(cx, cy, cz, w, h, d)``: centre and size divided by the patch's size per axis, so
a box inside the patch has every value in ``[0, 1]``. These functions are the one place where the
project's boxes (``(N, 6)`` xyzxyz voxel, :mod:`shared.boxes.convention`) become normalised boxes and
back; they are differentiable torch functions (the losses run through them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def centre_size_to_corners(boxes: Tensor) -> Tensor:
    """``(cx, cy, cz, w, h, d)`` → ``(x1, y1, z1, x2, y2, z2)`` in the same units. Shape ``(..., 6)``."""
    centre, half = boxes[..., :3], boxes[..., 3:] / 2
    return torch.cat([centre - half, centre + half], dim=-1)


def corners_to_centre_size(boxes: Tensor) -> Tensor:
    """``(x1, y1, z1, x2, y2, z2)`` → ``(cx, cy, cz, w, h, d)`` in the same units. Shape ``(..., 6)``."""
    low, high = boxes[..., :3], boxes[..., 3:]
    return torch.cat([(low + high) / 2, high - low], dim=-1)


def _patch_size(image_shape: Sequence[int], like: Tensor) -> Tensor:
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be the patch's (X, Y, Z), got {tuple(image_shape)}")
    return torch.as_tensor([float(size) for size in image_shape], dtype=like.dtype, device=like.device)


def normalize_boxes(boxes: Tensor, image_shape: Sequence[int]) -> Tensor:
    """Voxel xyzxyz boxes of a patch of spatial size ``image_shape`` → normalised ``(cx, cy, cz, w, h, d)``.

    Shape:
        ``(..., 6)`` → ``(..., 6)``.
    """
    boxes = boxes if boxes.is_floating_point() else boxes.float()
    return corners_to_centre_size(boxes) / _patch_size(image_shape, boxes).repeat(2)


def denormalize_boxes(boxes: Tensor, image_shape: Sequence[int]) -> Tensor:
    """Normalised ``(cx, cy, cz, w, h, d)`` → voxel xyzxyz boxes of a patch of spatial size ``image_shape``.

    Shape:
        ``(..., 6)`` → ``(..., 6)``.
    """
    return centre_size_to_corners(boxes * _patch_size(image_shape, boxes).repeat(2))
