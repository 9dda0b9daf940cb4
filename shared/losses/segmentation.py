"""Auxiliary segmentation loss of the Retina U-Net: cross-entropy + batch Dice (nnDetection's choice)."""

from __future__ import annotations

from monai.losses import DiceCELoss
from torch import Tensor, nn


class SegmentationLoss(nn.Module):
    """Softmax cross-entropy + batch Dice of (B, K+1, X, Y, Z) logits against a (B, 1, X, Y, Z) map.

    Batch Dice pools the whole batch into one Dice per class, so patches without foreground do not
    produce the degenerate per-image Dice of an empty target. Background is left out of the Dice.

    Args:
        dice_weight: weight of the Dice term.
        ce_weight: weight of the cross-entropy term.
    """

    def __init__(self, *, dice_weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__()
        self.loss = DiceCELoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
            lambda_dice=float(dice_weight),
            lambda_ce=float(ce_weight),
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss.

        Args:
            logits: (B, K+1, X, Y, Z), class 0 background.
            target: (B, 1, X, Y, Z) integer map, 0 background, class + 1 foreground.
        """
        return self.loss(logits, target.long().to(logits.device))
