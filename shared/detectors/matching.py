"""Anchor ↔ box matching: ATSS (adaptive training sample selection, Zhang et al. 2020).

The rule is MONAI's ``ATSSMatcher`` (which we checked against the ATSS paper and nnDetection's matcher):
per level the ``num_candidates × A`` anchors whose centres are nearest to the box centre are candidates;
positives have IoU ≥ mean + std of the candidates' IoUs; an anchor claimed by several boxes goes to the
one with the highest IoU. This module computes exactly the same matches (the same float32 operations on
the same values, so ties and thresholds fall the same way; ``tests/detectors/test_matching.py`` compares
the two bit for bit) with two savings that matter at ~400,000 anchors per patch:

- the anchors' centres are computed once per anchor tensor, not once per image and step;
- IoUs are computed for the candidates only (N × L·num_candidates·A pairs), not for every anchor:
  MONAI's matcher computes the whole N × M IoU matrix, then reads it at the candidates alone.

It also makes images without boxes explicit and returns matches only, with a keyword-only interface.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data.box_utils import TO_REMOVE, box_area, box_centers, centers_in_boxes
from torch import Tensor

#: match value of an anchor that is background
BACKGROUND = -1
#: match value of an anchor that is ignored in the loss (ATSS never produces it; other matchers may)
IGNORE = -2
#: the dtype of MONAI's box maths (``monai.data.box_utils.COMPUTE_DTYPE``)
COMPUTE_DTYPE = torch.float32


def candidate_iou(boxes: Tensor, candidates: Tensor) -> Tensor:
    """IoU of each box with its own candidate anchors, computed as MONAI's ``box_iou`` computes each pair.

    Shape:
        boxes (N, 6), candidates (N, K, 6) xyzxyz → (N, K) float32.
    """
    boxes, candidates = boxes.to(COMPUTE_DTYPE), candidates.to(COMPUTE_DTYPE)
    box_volume = box_area(boxes)  # also refuses boxes of negative size, as box_iou does
    candidate_volume = box_area(candidates.reshape(-1, 6)).reshape(candidates.shape[:2])
    low = torch.max(boxes[:, None, :3], candidates[..., :3])
    high = torch.min(boxes[:, None, 3:], candidates[..., 3:])
    intersection = torch.prod((high - low + TO_REMOVE).clamp(min=0), dim=-1)
    union = box_volume[:, None] + candidate_volume - intersection
    return intersection / (union + torch.finfo(COMPUTE_DTYPE).eps)


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
        # the last anchor tensor and its centres: the detector passes the same (cached) tensor every step
        self._centres_of: tuple[Tensor, int, Tensor] | None = None

    def anchor_centres(self, anchors: Tensor) -> Tensor:
        """(M, 3) float32 centres of the anchors, as MONAI's ``box_centers`` gives them; cached per tensor."""
        cached = self._centres_of
        if cached is None or cached[0] is not anchors or cached[1] != anchors._version:
            cached = (anchors, anchors._version, box_centers(anchors.to(COMPUTE_DTYPE)))
            self._centres_of = cached
        return cached[2]

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
        total = anchors.shape[0]
        if boxes.numel() == 0:
            return torch.full((total,), BACKGROUND, dtype=torch.int64, device=anchors.device)
        boxes = boxes.to(anchors.dtype).reshape(-1, 6)
        candidates = self._candidates(boxes, anchors, positions_per_level, num_anchors)  # (N, K)
        if candidates.shape[1] <= 1:  # MONAI's rule for a single candidate: it is the first box's
            matches = torch.full((total,), BACKGROUND, dtype=torch.int64, device=anchors.device)
            matches[candidates] = 0
            return matches
        ious = candidate_iou(boxes, anchors[candidates])
        threshold = ious.mean(dim=1) + ious.std(dim=1)
        positive = ious >= threshold[:, None]
        if self.center_in_gt:
            box_of_candidate = torch.arange(len(boxes), device=boxes.device)[:, None].expand_as(candidates)
            inside = centers_in_boxes(self.anchor_centres(anchors)[candidates.reshape(-1)],
                                      boxes[box_of_candidate.reshape(-1)], eps=0.01)
            positive = positive & torch.as_tensor(inside).view_as(positive)
        # every anchor's best positive box, over the whole (N, M) grid as MONAI takes it (same ties)
        claimed = torch.full((len(boxes), total), -torch.inf, dtype=COMPUTE_DTYPE, device=anchors.device)
        rows = torch.arange(len(boxes), device=boxes.device)[:, None].expand_as(candidates)
        claimed[rows[positive], candidates[positive]] = ious[positive].to(COMPUTE_DTYPE)
        best, matches = claimed.max(dim=0)
        matches[best == -torch.inf] = BACKGROUND
        return matches.to(torch.int64)

    def _candidates(self, boxes: Tensor, anchors: Tensor, positions_per_level: Sequence[int],
                    num_anchors: int) -> Tensor:
        """(N, K) indices of each box's candidate anchors, level by level (MONAI's top-k of centre distances)."""
        box_centre = box_centers(boxes.to(COMPUTE_DTYPE))
        distances = (box_centre[:, None] - self.anchor_centres(anchors)[None]).pow(2).sum(-1).sqrt()
        chosen, start = [], 0
        for positions in positions_per_level:
            stop = start + positions * num_anchors
            # MONAI caps k at the level's positions (not anchors): kept so that matches stay identical
            count = min(self.num_candidates * num_anchors, positions)
            chosen.append(distances[:, start:stop].topk(count, dim=1, largest=False)[1] + start)
            start = stop
        return torch.cat(chosen, dim=1)
