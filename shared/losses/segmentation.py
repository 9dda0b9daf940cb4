"""Auxiliary segmentation loss of the Retina U-Net: cross-entropy + batch Dice (nnDetection's choice)."""

from __future__ import annotations

from monai.losses import DiceCELoss
from torch import Tensor, nn


class SegmentationLoss(nn.Module):
    """Softmax cross-entropy + batch Dice of (B, C, X, Y, Z) logits against a (B, 1, X, Y, Z) map.

    ``C = 2`` is a foreground/background head (nnDetection's ``DiCESegmenterFgBg``, the paper's
    choice): every foreground class of the map counts as foreground. ``C = K + 1`` is one channel per
    class plus background, the map used as is.

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
            logits: (B, C, X, Y, Z), channel 0 background; C = 2 (foreground/background) or K + 1.
            target: (B, 1, X, Y, Z) integer map, 0 background, class + 1 foreground.

        Raises:
            ValueError: when the map holds a label the C channels cannot represent (C > 2).
        """
        target = target.long().to(logits.device)
        channels = logits.shape[1]
        if channels == 2:
            target = (target > 0).long()
        elif target.numel() and int(target.max()) >= channels:
            raise ValueError(
                f"the segmentation map holds label {int(target.max())}, the head predicts {channels} channels: "
                "give the network num_classes + 1 segmentation channels or a foreground/background head"
            )
        return self.loss(logits, target)
