"""The Deformable DETR detector: the network's per-query outputs → set-prediction losses (training) or
boxes (inference), and the planning of its number of queries.

The network (:class:`shared.networks.deformable_detr.DeformableDETRNetwork`) is the only module with
parameters; matching and losses are :class:`shared.losses.set_prediction.SetPredictionLoss`, the box
conversion :mod:`shared.boxes.normalized`. Implements :class:`shared.detectors.interface.Detector`: per
patch, the top-scoring (query, class) pairs as boxes in the patch's voxels, no NMS (a set prediction
has one query per object; sliding-window inference clusters across tiles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shared.boxes.normalized import denormalize_boxes, normalize_boxes
from shared.detectors.interface import Detector, ExportedOutput, OutputSpec
from shared.encoders import build_encoder
from shared.losses.set_prediction import SetPredictionLoss

BOX_VALUES = 6


class DenseQueryOutput(nn.Module):
    """A Deformable DETR network's last decoder layer as one tensor in a 1-tuple: ``((B, K + 6, Q),)``,
    per query its K class logits then its normalised box (the network's ``dense_output`` form)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: Tensor) -> tuple[Tensor]:
        outputs = self.network(images)
        if isinstance(outputs, Tensor):  # built with dense_output=True
            return (outputs,)
        return (torch.cat([outputs["class_logits"][-1], outputs["boxes"][-1]], dim=-1).transpose(1, 2),)


class DeformableDETRDetector(Detector):
    """Set-prediction training and inference around a Deformable DETR network.

    Args:
        network: module whose forward gives ``{"class_logits": [...], "boxes": [...], "proposal_logits",
            "proposal_boxes"}`` (normalised boxes) and which has ``num_classes``.
        loss: the matched loss (default :class:`SetPredictionLoss`: focal 1, L1 5, GIoU 2, matcher costs
            2, 5, 2, auxiliary losses on every decoder layer and the proposals).
        score_threshold: smallest score kept per patch (a per-tile pre-filter in sliding-window inference).
        detections_per_image: most (query, class) pairs kept per patch, the highest scores.
        min_size: smallest box side, voxels, kept per patch.
    """

    def __init__(self, network: nn.Module, *, loss: SetPredictionLoss | None = None, score_threshold: float = 0.05,
                 detections_per_image: int = 100, min_size: float = 0.0):
        super().__init__()
        self.network = network
        self.num_classes = int(network.num_classes)
        if loss is not None and not callable(loss):
            raise ValueError(f"loss: expected a built loss (a '_target_' node in a bundle) or None, got {loss!r}")
        self.loss = loss or SetPredictionLoss()
        if detections_per_image < 1:
            raise ValueError(f"detections_per_image must be positive, got {detections_per_image}")
        self.score_threshold, self.min_size = float(score_threshold), float(min_size)
        self.detections_per_image = int(detections_per_image)

    def forward(self, images: Tensor, targets: Mapping | None = None):
        """Losses in training mode (targets required), detections in eval mode.

        Args:
            images: ``(B, C, X, Y, Z)``.
            targets: ``{"boxes": list of (N_i, 6) xyzxyz voxel, "labels": list of (N_i,)}`` (``seg`` ignored).

        Returns:
            training: dict of loss terms and ``"loss"``; eval: see :meth:`predict`.
        """
        if not self.training:
            return self.predict(images)
        if targets is None:
            raise ValueError("DeformableDETRDetector in training mode needs targets (boxes, labels)")
        return self.compute_losses(self.network(images), targets, tuple(images.shape[2:]))

    def compute_losses(self, outputs: Mapping, targets: Mapping, image_shape: Sequence[int]) -> dict[str, Tensor]:
        """Loss terms and ``"loss"`` from the network's outputs and voxel targets of patches ``image_shape``."""
        device = outputs["boxes"][-1].device
        target_boxes, target_labels = [], []
        for image, (boxes, labels) in enumerate(zip(targets["boxes"], targets["labels"])):
            boxes = torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, BOX_VALUES)
            labels = torch.as_tensor(labels, dtype=torch.int64, device=device).reshape(-1)
            if len(labels) != len(boxes) or (len(labels) and not 0 <= labels.min() <= labels.max() < self.num_classes):
                raise ValueError(f"image {image} of the batch: {len(boxes)} boxes with labels {labels.tolist()}; "
                                 f"expected one label per box in 0..{self.num_classes - 1}")
            target_boxes.append(normalize_boxes(boxes, image_shape))
            target_labels.append(labels)
        return self.loss(outputs, target_boxes, target_labels)

    @torch.no_grad()
    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image: ``{"boxes": (M, 6) xyzxyz voxel inside the patch, "scores": (M,),
        "labels": (M,) int64}``."""
        return self.detections_from_outputs(self.export_network()(images), tuple(images.shape[2:]))

    def postprocess(self, logits: Tensor, boxes: Tensor, image_shape: Sequence[int]) -> list[dict[str, Tensor]]:
        """The top (query, class) scores of each image as voxel boxes clipped to the patch, filtered by
        ``score_threshold`` and ``min_size``.

        Shape:
            logits ``(B, Q, K)``, boxes ``(B, Q, 6)`` normalised → per image ``(M, 6)``, ``(M,)``, ``(M,)``.
        """
        limits = torch.as_tensor([float(s) for s in image_shape], device=boxes.device).repeat(2)
        detections = []
        for image_logits, image_boxes in zip(logits.float(), boxes.float()):
            scores = image_logits.sigmoid().flatten()
            scores, order = scores.topk(min(self.detections_per_image, scores.numel()))
            queries, labels = order // self.num_classes, order % self.num_classes
            voxel = torch.minimum(denormalize_boxes(image_boxes[queries], image_shape).clamp(min=0), limits)
            keep = scores >= self.score_threshold
            if self.min_size > 0:
                keep &= (voxel[:, 3:] - voxel[:, :3]).min(dim=1).values >= self.min_size
            detections.append({"boxes": voxel[keep], "scores": scores[keep], "labels": labels[keep]})
        return detections

    @property
    def output_spec(self) -> OutputSpec:
        """One output ``"pred"`` ``(B, K + 6, Q)``: per query its K class logits, then its normalised box."""
        classes = f"0-{self.num_classes - 1}" if self.num_classes > 1 else "0"
        box = f"{self.num_classes}-{self.num_classes + BOX_VALUES - 1}"
        return OutputSpec((ExportedOutput("pred", self.num_classes + BOX_VALUES, {
            classes: "class logits per query", box: "box per query (cx, cy, cz, w, h, d) / patch size"}),))

    def export_network(self) -> nn.Module:
        """The network's last decoder layer as one ``(B, K + 6, Q)`` tensor (returned as a 1-tuple)."""
        return DenseQueryOutput(self.network)

    @torch.no_grad()
    def detections_from_outputs(self, outputs: Sequence[Tensor], image_shape: Sequence[int]) -> list[dict[str, Tensor]]:
        """The exported ``(B, K + 6, Q)`` tensor → the detections of :meth:`predict`."""
        self.output_spec.check(outputs)
        dense = outputs[0].transpose(1, 2)
        return self.postprocess(dense[..., :self.num_classes], dense[..., self.num_classes:], image_shape)


def level_strides(encoder: dict[str, Any], num_levels: int, in_channels: int = 1) -> list[int | list[int]]:
    """The strides of the encoder levels a :class:`DeformableDETRNetwork` feeds to its transformer.

    The data preparation records them and checks the patch against the coarsest before the network is
    built (its ``num_queries`` is planned by that preparation); the encoder is built on the meta device.

    Args:
        encoder: the encoder spec (``{"name": ..., "preset": ...}``, planned strides included).
        num_levels: the network's ``num_levels``, the encoder's last levels.
        in_channels: image channels (the strides do not depend on them).

    Returns:
        fine → coarse, an int per level or one per axis.
    """
    with torch.device("meta"):
        levels = build_encoder(encoder, in_channels).feature_info
    if not 1 <= num_levels <= len(levels):
        raise ValueError(f"num_levels must be 1..{len(levels)} (the encoder's levels), got {num_levels}")
    return [level["stride"] if isinstance(level["stride"], int) else list(level["stride"])
            for level in levels[-num_levels:]]


def objects_per_patch(case_boxes: Sequence[np.ndarray], patch_size: Sequence[int]) -> list[int]:
    """How many objects a training patch centred on each object holds (foreground sampling's view).

    For every box of every case, the number of that case's boxes whose centres lie in a patch of
    ``patch_size`` centred on it; a case without boxes counts one patch with 0 objects.

    Args:
        case_boxes: per training case its boxes ``(N, 6)`` xyzxyz voxel at the training spacing.
        patch_size: the training patch ``(X, Y, Z)``.

    Returns:
        one count per box (or per empty case).
    """
    half = np.asarray(patch_size, dtype=np.float64) / 2
    counts = []
    for boxes in case_boxes:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
        if not len(boxes):
            counts.append(0)
            continue
        centres = (boxes[:, :3] + boxes[:, 3:]) / 2
        inside = (np.abs(centres[:, None] - centres[None]) <= half).all(axis=-1)  # (N, N)
        counts.extend(int(n) for n in inside.sum(axis=1))
    return counts


def plan_queries(boxes_per_patch: Sequence[int | np.ndarray], *, factor: float = 3.0, percentile: float = 95.0,
                 minimum: int = 16) -> dict[str, Any]:
    """Deformable DETR's plan: the number of object queries from the objects a patch holds.

    ``num_queries = max(minimum, ceil(factor · percentile-th percentile of the objects per patch))``:
    enough queries that the matcher has spare ones for nearly every patch, a floor for data with one
    object per patch.

    Args:
        boxes_per_patch: per training patch its object count, or its boxes ``(N, 6)``
            (:func:`objects_per_patch` estimates the counts from the training cases).
        factor: queries per object.
        percentile: of the objects-per-patch distribution.
        minimum: the floor.

    Returns:
        ``{"num_queries": int}``, the keyword ``DeformableDETRNetwork`` takes from the plan.
    """
    counts = [int(n) if np.isscalar(n) else len(np.asarray(n).reshape(-1, 6)) for n in boxes_per_patch]
    if factor <= 0 or not 0 <= percentile <= 100 or minimum < 1:
        raise ValueError(f"plan_queries needs factor > 0, percentile in [0, 100] and minimum ≥ 1, got "
                         f"{factor}, {percentile}, {minimum}")
    typical = float(np.percentile(counts, percentile)) if counts else 0.0
    return {"num_queries": int(max(minimum, int(np.ceil(factor * typical - 1e-9))))}
