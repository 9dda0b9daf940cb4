"""Box coder: xyzxyz boxes ↔ deltas relative to anchors (R-CNN parametrisation, in 3-D).

Deltas are ``(dx, dy, dz, dw, dh, dd)``: centre offsets in units of the anchor size and log size
ratios, each multiplied by its weight (nnDetection's Retina U-Net uses weights 1). This is the
channel order ``j`` of the network's ``box_regression`` output (``a·6 + j``).

Written here rather than reusing MONAI's ``BoxCoder`` because MONAI computes in float32 whatever the
input dtype, so a float64 round trip is not exact; the maths is the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

#: deltas per box ``(dx, dy, dz, dw, dh, dd)``: the channels per anchor of the regression head
BOX_DELTAS = 6


class BoxCoder:
    """Encode boxes as deltas to anchors and decode them back.

    Args:
        weights: six weights for ``(dx, dy, dz, dw, dh, dd)``.
        size_clip: largest log size ratio passed to ``exp`` when decoding (stops overflow of
            untrained heads); default ``log(1000 / 16)`` as in torchvision/MONAI.
    """

    def __init__(self, *, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0), size_clip: float | None = None):
        if len(weights) != BOX_DELTAS:
            raise ValueError(f"weights must have {BOX_DELTAS} values (dx, dy, dz, dw, dh, dd), got {list(weights)}")
        self.weights = [float(w) for w in weights]
        self.size_clip = math.log(1000.0 / 16) if size_clip is None else float(size_clip)

    def _weights(self, like: Tensor) -> Tensor:
        return torch.as_tensor(self.weights, dtype=like.dtype, device=like.device)

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Deltas that turn each anchor into its box.

        Shape:
            boxes (N, 6), anchors (N, 6) xyzxyz → (N, 6) deltas.
        """
        anchor_size = anchors[:, 3:] - anchors[:, :3]
        anchor_centre = (anchors[:, 3:] + anchors[:, :3]) / 2
        box_size = boxes[:, 3:] - boxes[:, :3]
        box_centre = (boxes[:, 3:] + boxes[:, :3]) / 2
        deltas = torch.cat([(box_centre - anchor_centre) / anchor_size, torch.log(box_size / anchor_size)], dim=1)
        return deltas * self._weights(deltas)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes from deltas and anchors; inverse of :meth:`encode`.

        Shape:
            deltas (N, 6), anchors (N, 6) xyzxyz → (N, 6) xyzxyz boxes, dtype of ``deltas``.
        """
        anchors = anchors.to(deltas.dtype)
        deltas = deltas / self._weights(deltas)
        anchor_size = anchors[:, 3:] - anchors[:, :3]
        anchor_centre = (anchors[:, 3:] + anchors[:, :3]) / 2
        centre = anchor_centre + deltas[:, :3] * anchor_size
        size = torch.exp(deltas[:, 3:].clamp(max=self.size_clip)) * anchor_size
        return torch.cat([centre - size / 2, centre + size / 2], dim=1)
