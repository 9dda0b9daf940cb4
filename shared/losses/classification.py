"""Anchor classification losses: sigmoid focal loss (default) and BCE with hard negative mining.

Both take the flattened logits of all anchors and the per-anchor target class from the matcher
(``-1`` background, ``-2`` ignored, ``k ≥ 0`` class), so the detector can swap them freely.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.apps.detection.utils.hard_negative_sampler import HardNegativeSampler
from torch import Tensor


def one_hot_targets(anchor_classes: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """(..., ) classes (negative = background) → (..., K) one-hot float targets."""
    targets = torch.zeros(*anchor_classes.shape, num_classes, dtype=dtype, device=anchor_classes.device)
    positive = anchor_classes >= 0
    targets[positive, anchor_classes[positive]] = 1.0
    return targets


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, *, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise binary focal loss (Lin et al. 2017), summed by the caller.

    ``FL = -α_t (1 - p_t)^γ log(p_t)`` with ``α_t = α`` for targets 1 and ``1 - α`` for targets 0;
    ``alpha < 0`` disables the α weighting.

    Shape:
        logits, targets (...) → (...).
    """
    probs = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = cross_entropy * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


class FocalClassificationLoss:
    """Sigmoid focal loss over all non-ignored anchors, divided by the number of positive anchors.

    Args:
        alpha: weight of positives (0.25 as in RetinaNet).
        gamma: focusing exponent (2).
    """

    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0):
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def __call__(self, logits: Tensor, anchor_classes: Tensor) -> Tensor:
        """Loss of a batch.

        Args:
            logits: (B, M, K) classification logits of all anchors.
            anchor_classes: (B, M) int64 matched class, -1 background, -2 ignored.

        Returns:
            scalar loss (0 with a live graph when nothing is valid).
        """
        valid = anchor_classes >= -1
        targets = one_hot_targets(anchor_classes, logits.shape[-1], logits.dtype)
        if not bool(valid.all()):  # ATSS ignores nothing: skip copying ~400,000 anchors' logits (and back)
            logits, targets = logits[valid], targets[valid]
        loss = sigmoid_focal_loss(logits, targets, alpha=self.alpha, gamma=self.gamma).sum()
        num_positive = (anchor_classes >= 0).sum().clamp(min=1)
        return loss / num_positive


class HardNegativeBCELoss:
    """Binary cross-entropy on all positives and the hardest negatives (nnDetection's Retina U-Net).

    Per image, ``batch_size_per_image · positive_fraction`` positives at most are drawn, then enough
    negatives to restore the fraction, taken at random from the ``pool_size`` × as many negatives with
    the highest foreground probability (MONAI's ``HardNegativeSampler``). The loss is the mean BCE over
    the drawn anchors of the batch.

    Args:
        batch_size_per_image: anchors drawn per image.
        positive_fraction: share of positives among them.
        pool_size: hard-negative pool, as a multiple of the negatives drawn.
        min_neg: negatives drawn even from an image without positives.
    """

    def __init__(
        self,
        *,
        batch_size_per_image: int = 32,
        positive_fraction: float = 0.33,
        pool_size: float = 20,
        min_neg: int = 1,
    ):
        self.sampler = HardNegativeSampler(
            batch_size_per_image=batch_size_per_image,
            positive_fraction=positive_fraction,
            min_neg=min_neg,
            pool_size=pool_size,
        )

    def __call__(self, logits: Tensor, anchor_classes: Tensor) -> Tensor:
        """Loss of a batch; same arguments as :meth:`FocalClassificationLoss.__call__`."""
        targets = one_hot_targets(anchor_classes, logits.shape[-1], logits.dtype)
        with torch.no_grad():
            foreground = torch.sigmoid(logits.detach()).max(dim=-1).values
        # the sampler calls class ≥ 1 positive and 0 negative; ignored anchors get -1 (neither)
        sampler_labels = torch.where(anchor_classes >= 0, 1, torch.where(anchor_classes == -1, 0, -1))
        positive, negative = self.sampler(list(sampler_labels), foreground.reshape(-1))
        chosen = torch.stack([p | n for p, n in zip(positive, negative)]).bool()
        if not chosen.any():
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits[chosen], targets[chosen], reduction="sum") / chosen.sum()
