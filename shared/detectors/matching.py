"""Anchor ↔ box matching: ATSS (adaptive training sample selection, Zhang et al. 2020).

Thin wrapper over MONAI's ``ATSSMatcher``, whose logic we checked against the ATSS paper and
nnDetection's matcher (per level the ``num_candidates × A`` anchors nearest to the box centre are
candidates; positives have IoU ≥ mean + std of the candidates' IoUs; an anchor claimed by several
boxes goes to the one with the highest IoU). The wrapper fixes the interface (keyword-only, JSON-able),
makes images without boxes explicit and returns matches only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher as _MonaiATSSMatcher
from torch import Tensor

#: match value of an anchor that is background
BACKGROUND = -1
#: match value of an anchor that is ignored in the loss (ATSS never produces it; other matchers may)
IGNORE = -2


class ATSSMatcher:
    """ATSS matching of one image's boxes to its anchors.

    Args:
        num_candidates: candidate positions per level (×A anchors each); nnDetection uses 4.
        center_in_gt: require a positive anchor's centre inside its box. False by default: with
            small lesions it can leave a box without any positive (nnDetection's choice as well).
    """

    def __init__(self, *, num_candidates: int = 4, center_in_gt: bool = False):
        self.num_candidates = int(num_candidates)
        self.center_in_gt = bool(center_in_gt)
        self._matcher = _MonaiATSSMatcher(num_candidates=self.num_candidates, center_in_gt=self.center_in_gt)

    def __call__(self, boxes: Tensor, anchors: Tensor, positions_per_level: Sequence[int], num_anchors: int) -> Tensor:
        """Index of the matched box for every anchor, or :data:`BACKGROUND`.

        Args:
            boxes: (N, 6) xyzxyz voxel boxes of one image; N may be 0.
            anchors: (M, 6) xyzxyz anchors of all levels, in anchor order.
            positions_per_level: X_l·Y_l·Z_l of each level (anchors of level l are contiguous).
            num_anchors: A, anchors per position.

        Returns:
            (M,) int64 matches in ``[-2, N)``.
        """
        if boxes.numel() == 0:
            return torch.full((anchors.shape[0],), BACKGROUND, dtype=torch.int64, device=anchors.device)
        _, matches = self._matcher(boxes.to(anchors.dtype), anchors, list(positions_per_level), num_anchors)
        return matches.to(torch.int64)
