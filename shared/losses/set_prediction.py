"""Set-prediction losses of Deformable DETR: sigmoid focal classification, L1 and GIoU of matched boxes,
on the last decoder layer and, as auxiliary losses, on every earlier decoder layer and the encoder's
proposals, each matched on its own by the Hungarian matcher.

Every term is a sum over the batch divided by the batch's number of target boxes (at least 1), as in
Deformable DETR; under ``torch.distributed`` that number is the mean over the processes, so every rank
divides by the same count and DDP's averaged gradient weighs each box of the global batch alike.
Classification is over all queries and classes (matched queries have their target's class as positive,
all others none), L1 over the six normalised ``(cx, cy, cz, w, h, d)`` values and ``1 - GIoU`` over the
matched pairs. Images and whole batches without objects are valid: every query is then a
negative and the box terms are 0 (with a live graph).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.data.box_utils import box_pair_giou
from torch import Tensor

from shared.boxes.normalized import centre_size_to_corners
from shared.detectors.hungarian import HungarianMatcher
from shared.losses.classification import sigmoid_focal_loss

#: weights of the three terms (nnDetection's ``deformable_detr_sigm_for_ResEnc``: focal 1, L1 5, GIoU 2)
DEFAULT_TERM_WEIGHTS = {"classification": 1.0, "box_l1": 5.0, "box_giou": 2.0}


def set_loss_terms(logits: Tensor, boxes: Tensor, matches: Sequence[tuple[Tensor, Tensor]],
                   target_boxes: Sequence[Tensor], target_labels: Sequence[Tensor], num_boxes: float, *,
                   alpha: float = 0.25, gamma: float = 2.0) -> dict[str, Tensor]:
    """The three terms of one prediction set (a decoder layer or the proposals) given its matching.

    Args:
        logits: class logits of the queries.
        boxes: their normalised ``(cx, cy, cz, w, h, d)`` boxes.
        matches: per image ``(query_index, target_index)`` from :class:`HungarianMatcher`.
        target_boxes, target_labels: per image, the targets' normalised boxes and classes.
        num_boxes: the divisor (the batch's target count, at least 1).
        alpha, gamma: of the focal loss.

    Returns:
        ``{"classification", "box_l1", "box_giou"}`` scalars.

    Shape:
        logits ``(B, Q, K)``, boxes ``(B, Q, 6)``, target_boxes ``[(N_i, 6)]``, target_labels ``[(N_i,)]``.
    """
    logits, boxes = logits.float(), boxes.float()
    classes = torch.zeros_like(logits)
    matched_boxes, matched_targets = [], []
    for image, (queries, targets) in enumerate(matches):
        classes[image, queries, target_labels[image][targets]] = 1.0
        matched_boxes.append(boxes[image, queries])
        matched_targets.append(target_boxes[image][targets].float())
    predicted, wanted = torch.cat(matched_boxes), torch.cat(matched_targets)
    terms = {"classification": sigmoid_focal_loss(logits, classes, alpha=alpha, gamma=gamma).sum() / num_boxes}
    if len(predicted) == 0:
        zero = boxes.sum() * 0.0
        return {**terms, "box_l1": zero, "box_giou": zero.clone()}
    terms["box_l1"] = (predicted - wanted).abs().sum() / num_boxes
    giou = torch.as_tensor(box_pair_giou(centre_size_to_corners(predicted), centre_size_to_corners(wanted)))
    terms["box_giou"] = (1 - giou).sum() / num_boxes
    return terms


def target_count(target_labels: Sequence[Tensor], device: torch.device | str = "cpu") -> float:
    """The loss divisor: the batch's number of targets, averaged over the processes under
    ``torch.distributed`` (Deformable DETR's normalisation), at least 1. Every process must call it."""
    count = torch.tensor(float(sum(len(labels) for labels in target_labels)), device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        count = count / torch.distributed.get_world_size()
    return max(float(count), 1.0)


class SetPredictionLoss:
    """Matched set-prediction loss of a :class:`shared.networks.deformable_detr.DeformableDETRNetwork`'s
    outputs, with the auxiliary losses of every decoder layer and of the encoder proposals.

    Args:
        matcher: the Hungarian matcher (default: class 2, L1 5, GIoU 2 with this loss's ``alpha``, ``gamma``).
        alpha, gamma: of the sigmoid focal loss.
        term_weights: weights of ``classification``, ``box_l1``, ``box_giou`` (default focal 1, L1 5,
            GIoU 2), the same for every layer.
        auxiliary: add the losses of the earlier decoder layers.
        proposals: add the loss of the encoder proposals (two-stage).
    """

    def __init__(self, matcher: HungarianMatcher | None = None, *, alpha: float = 0.25, gamma: float = 2.0,
                 term_weights: Mapping[str, float] | None = None, auxiliary: bool = True, proposals: bool = True):
        unknown = set(term_weights or {}) - set(DEFAULT_TERM_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown term_weights keys {sorted(unknown)}; known: {sorted(DEFAULT_TERM_WEIGHTS)}")
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.matcher = matcher or HungarianMatcher(alpha=alpha, gamma=gamma)
        self.term_weights = {**DEFAULT_TERM_WEIGHTS, **dict(term_weights or {})}
        self.auxiliary, self.proposals = bool(auxiliary), bool(proposals)

    def __call__(
        self, outputs: Mapping, target_boxes: Sequence[Tensor], target_labels: Sequence[Tensor]
    ) -> dict[str, Tensor]:
        """All loss terms and their weighted sum ``"loss"``.

        Args:
            outputs: the network's dict (``class_logits``, ``boxes`` per decoder layer; ``proposal_logits``,
                ``proposal_boxes``).
            target_boxes: per image, normalised ``(cx, cy, cz, w, h, d)`` boxes ``(N_i, 6)``.
            target_labels: per image, classes ``(N_i,)`` int64.

        Returns:
            The last layer's ``classification``, ``box_l1``, ``box_giou``; the earlier layers' as
            ``<term>_<layer>`` (layer 0 the first); the proposals' as ``<term>_proposals``; ``"loss"``.
        """
        num_boxes = target_count(target_labels, outputs["boxes"][-1].device)
        last = len(outputs["boxes"]) - 1
        sets = {"": (outputs["class_logits"][last], outputs["boxes"][last])}
        if self.auxiliary:
            sets.update({f"_{layer}": (outputs["class_logits"][layer], outputs["boxes"][layer])
                         for layer in range(last)})
        if self.proposals and "proposal_logits" in outputs:
            sets["_proposals"] = (outputs["proposal_logits"], outputs["proposal_boxes"])
        losses: dict[str, Tensor] = {}
        total = 0.0
        for suffix, (logits, boxes) in sets.items():
            matches = self.matcher(logits.detach(), boxes.detach(), target_boxes, target_labels)
            terms = set_loss_terms(logits, boxes, matches, target_boxes, target_labels, num_boxes,
                                   alpha=self.alpha, gamma=self.gamma)
            losses.update({name + suffix: value for name, value in terms.items()})
            total = total + sum(self.term_weights[name] * value for name, value in terms.items())
        losses["loss"] = total
        return losses
