"""One-to-one matching of predicted queries to target boxes (DETR's Hungarian matcher), per image.

The cost of assigning query ``q`` to target ``j`` is

``class_weight · focal(q, label_j) + l1_weight · |b_q - t_j|₁ + giou_weight · (-GIoU(b_q, t_j))``

with the focal cost of Deformable DETR (the focal loss of a positive minus that of a negative at the
target's class, from the sigmoid scores), the L1 distance of the normalised ``(cx, cy, cz, w, h, d)``
boxes and MONAI's GIoU of their corners. :func:`scipy.optimize.linear_sum_assignment` minimises the
total cost; every target gets a query when there are at least as many queries as targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data.box_utils import box_giou
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from shared.boxes.normalized import centre_size_to_corners


def focal_class_cost(logits: Tensor, labels: Tensor, *, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Deformable DETR's focal matching cost of every query for every target's class.

    Args:
        logits: class logits of the queries.
        labels: the targets' classes.
        alpha, gamma: of the focal loss (``alpha < 0``: no α weighting).

    Shape:
        logits ``(Q, K)``, labels ``(N,)`` → ``(Q, N)``.
    """
    probability = logits.sigmoid()[:, labels]
    positive_weight, negative_weight = (alpha, 1 - alpha) if alpha >= 0 else (1.0, 1.0)
    positive = positive_weight * (1 - probability) ** gamma * -(probability + 1e-8).log()
    negative = negative_weight * probability**gamma * -(1 - probability + 1e-8).log()
    return positive - negative


class HungarianMatcher:
    """Minimum-cost one-to-one assignment of queries to targets, image by image.

    Args:
        class_weight: weight of the focal class cost (Deformable DETR, nnDetection: 2).
        l1_weight: weight of the L1 box cost (5).
        giou_weight: weight of the negative GIoU cost (2).
        alpha, gamma: of the focal class cost (the classification loss's values).
    """

    def __init__(self, *, class_weight: float = 2.0, l1_weight: float = 5.0, giou_weight: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0):
        if min(class_weight, l1_weight, giou_weight) < 0 or class_weight + l1_weight + giou_weight == 0:
            raise ValueError(f"the cost weights must be ≥ 0 and not all 0, got class {class_weight}, "
                             f"L1 {l1_weight}, GIoU {giou_weight}")
        self.class_weight, self.l1_weight, self.giou_weight = float(class_weight), float(l1_weight), float(giou_weight)
        self.alpha, self.gamma = float(alpha), float(gamma)

    def cost_matrix(self, logits: Tensor, boxes: Tensor, target_boxes: Tensor, target_labels: Tensor) -> Tensor:
        """The assignment cost of every query for every target of one image.

        Shape:
            logits ``(Q, K)``, boxes ``(Q, 6)``, target_boxes ``(N, 6)`` normalised centre-size,
            target_labels ``(N,)`` → ``(Q, N)``.
        """
        logits, boxes, target_boxes = logits.float(), boxes.float(), target_boxes.float()
        cost = self.class_weight * focal_class_cost(logits, target_labels, alpha=self.alpha, gamma=self.gamma)
        cost = cost + self.l1_weight * torch.cdist(boxes, target_boxes, p=1)
        giou = torch.as_tensor(box_giou(centre_size_to_corners(boxes), centre_size_to_corners(target_boxes)))
        return cost - self.giou_weight * giou

    @torch.no_grad()
    def __call__(self, logits: Tensor, boxes: Tensor, target_boxes: Sequence[Tensor],
                 target_labels: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Match each image's queries to its targets.

        Args:
            logits: class logits of the queries, per image.
            boxes: normalised ``(cx, cy, cz, w, h, d)`` boxes of the queries.
            target_boxes: per image, its targets' normalised boxes.
            target_labels: per image, its targets' classes (int64).

        Returns:
            per image ``(query_index, target_index)``: int64 tensors of equal length ``min(Q, N_i)``,
            sorted by query; an image without targets gives two empty tensors.

        Shape:
            logits ``(B, Q, K)``, boxes ``(B, Q, 6)``, target_boxes ``[(N_i, 6)]``, target_labels ``[(N_i,)]``.
        """
        matches = []
        for image, (image_boxes, labels) in enumerate(zip(target_boxes, target_labels)):
            if len(labels) == 0:
                empty = torch.zeros(0, dtype=torch.int64, device=logits.device)
                matches.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(logits[image], boxes[image], image_boxes, labels)
            if not torch.isfinite(cost).all():
                raise ValueError(f"image {image} of the batch: the matching cost is not finite (NaN or inf "
                                 "predictions); lower the learning rate or check the inputs")
            queries, targets = linear_sum_assignment(cost.cpu().numpy())
            matches.append((torch.as_tensor(queries, dtype=torch.int64, device=logits.device),
                            torch.as_tensor(targets, dtype=torch.int64, device=logits.device)))
        return matches
