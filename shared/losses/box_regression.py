"""Box regression losses of positive anchors: (smooth) L1 on encoded deltas and GIoU on decoded boxes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.data.box_utils import box_pair_giou
from torch import Tensor


class DeltaL1Loss:
    """L1 (``beta = 0``) or smooth-L1 loss on the deltas of positive anchors, mean over positives.

    Args:
        beta: smooth-L1 transition point; 0 gives plain L1 (the paper's Retina U-Net fine-tuning).
    """

    def __init__(self, *, beta: float = 0.0):
        self.beta = float(beta)

    def __call__(self, predicted_deltas: Tensor, target_deltas: Tensor) -> Tensor:
        """Loss summed over the 6 deltas and averaged over positive anchors.

        Shape:
            predicted_deltas, target_deltas (P, 6) → scalar (0 with a live graph when P = 0).
        """
        if predicted_deltas.shape[0] == 0:
            return predicted_deltas.sum() * 0.0
        if self.beta > 0:
            loss = F.smooth_l1_loss(predicted_deltas, target_deltas, beta=self.beta, reduction="sum")
        else:
            loss = F.l1_loss(predicted_deltas, target_deltas, reduction="sum")
        return loss / predicted_deltas.shape[0]


class GIoULoss:
    """``1 - GIoU`` between decoded and target boxes of positive anchors, mean over positives.

    GIoU from MONAI's ``box_pair_giou`` (3-D, computed in float32, differentiable).
    """

    def __call__(self, predicted_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """Shape: predicted_boxes, target_boxes (P, 6) xyzxyz → scalar (0 with a live graph when P = 0)."""
        if predicted_boxes.shape[0] == 0:
            return predicted_boxes.sum() * 0.0
        giou = box_pair_giou(predicted_boxes, target_boxes.to(predicted_boxes.dtype))
        return (1.0 - torch.as_tensor(giou)).mean()
