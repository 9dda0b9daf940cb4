"""Raw head outputs → boxes: per-level top-k, decoding, clipping, class-wise NMS, per-image limit.

Kept apart from the network and the detector so it also applies to the outputs of an exported
(TorchScript) network, and to each tile of the sliding window.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from shared.boxes.nms import batched_nms
from shared.detectors.anchors import AnchorGenerator
from shared.detectors.box_coder import BOX_DELTAS, BoxCoder


class DetectionPostprocessor:
    """Turns the network's ``cls_logits``/``box_regression`` into per-image detections.

    Args:
        anchor_generator: the anchors the heads were trained with.
        box_coder: the box coder the heads were trained with.
        score_threshold: smallest kept score (sigmoid probability).
        topk_candidates: candidates kept per level before NMS (by score).
        nms_iou: IoU above which NMS removes a lower-scoring box of the same class.
        detections_per_image: most boxes returned per image.
        min_size: smallest box side (voxels) kept.
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        box_coder: BoxCoder,
        *,
        score_threshold: float = 0.05,
        topk_candidates: int = 1000,
        nms_iou: float = 0.6,
        detections_per_image: int = 100,
        min_size: float = 0.01,
    ):
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.score_threshold = float(score_threshold)
        self.topk_candidates = int(topk_candidates)
        self.nms_iou = float(nms_iou)
        self.detections_per_image = int(detections_per_image)
        self.min_size = float(min_size)

    @torch.no_grad()
    def __call__(
        self, cls_logits: Sequence[Tensor], box_regression: Sequence[Tensor], image_shape: Sequence[int]
    ) -> list[dict[str, Tensor]]:
        """Detections of a batch.

        Args:
            cls_logits: list over levels of (B, A·K, X_l, Y_l, Z_l).
            box_regression: list over levels of (B, A·6, X_l, Y_l, Z_l).
            image_shape: spatial size (X, Y, Z) of the input, to clip boxes.

        Returns:
            per image ``{"boxes": (M, 6) xyzxyz voxel, "scores": (M,), "labels": (M,) int64}``, by score.
        """
        grids = [tuple(out.shape[2:]) for out in cls_logits]
        anchors = self.anchor_generator.anchors_per_level(grids, device=cls_logits[0].device)
        num_anchors = self.anchor_generator.num_anchors
        results = []
        for image in range(cls_logits[0].shape[0]):
            candidates = [
                self._level_candidates(cls[image], reg[image], level_anchors, num_anchors)
                for cls, reg, level_anchors in zip(cls_logits, box_regression, anchors)
            ]
            boxes, scores, labels = (torch.cat(parts) for parts in zip(*candidates))
            results.append(self._select(boxes, scores, labels, image_shape))
        return results

    def _level_candidates(self, cls: Tensor, reg: Tensor, anchors: Tensor, num_anchors: int):
        """Top-k (anchor, class) pairs of one level and image, decoded."""
        num_classes = cls.shape[0] // num_anchors
        # (A·K, X, Y, Z) → (XYZ·A, K): the anchor order of the generator
        logits = cls.float().reshape(num_anchors, num_classes, -1).permute(2, 0, 1).reshape(-1, num_classes)
        scores = torch.sigmoid(logits)
        deltas = reg.float().reshape(num_anchors, BOX_DELTAS, -1).permute(2, 0, 1).reshape(-1, BOX_DELTAS)
        flat = scores.flatten()
        keep = torch.nonzero(flat > self.score_threshold).flatten()
        if keep.numel() > self.topk_candidates:
            keep = keep[flat[keep].topk(self.topk_candidates).indices]
        anchor_index = torch.div(keep, num_classes, rounding_mode="floor")
        boxes = self.box_coder.decode(deltas[anchor_index], anchors[anchor_index])
        return boxes, flat[keep], keep % num_classes

    def _select(self, boxes: Tensor, scores: Tensor, labels: Tensor, image_shape: Sequence[int]) -> dict[str, Tensor]:
        """Clip to the image, drop tiny boxes, class-wise NMS, keep the best ``detections_per_image``."""
        upper = torch.as_tensor(list(image_shape), dtype=boxes.dtype, device=boxes.device)
        boxes = torch.cat([boxes[:, :3].clamp(min=0), torch.minimum(boxes[:, 3:], upper)], dim=1)
        large = ((boxes[:, 3:] - boxes[:, :3]) >= self.min_size).all(dim=1)
        boxes, scores, labels = boxes[large], scores[large], labels[large]
        if boxes.shape[0]:
            # stopping at the per-image limit skips the full IoU matrix of a busy tile's candidates
            keep = batched_nms(boxes, scores, labels, self.nms_iou, max_keep=self.detections_per_image)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        return {"boxes": boxes, "scores": scores, "labels": labels.long()}
