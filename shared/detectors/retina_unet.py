"""The Retina U-Net detector: the network's raw outputs → losses (training) or boxes (inference).

The network (``RetinaUNetNetwork``) is the only module with parameters; this class adds anchors,
matching, box coding, the three losses and post-processing around it, each a separate object, so a
bundle's ``network_def`` can be the bare network (``verify_net_in_out``, TorchScript export) while
training and inference wrap it here. It implements :class:`shared.detectors.interface.Detector`; its
anchors come from :func:`shared.detectors.planning.plan_retina_unet`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from shared.detectors.anchors import AnchorGenerator, flatten_head_outputs, gather_head_outputs
from shared.detectors.box_coder import BOX_DELTAS, BoxCoder
from shared.detectors.export import DenseOutputNetwork, split_dense_output
from shared.detectors.interface import Detector, ExportedOutput, OutputSpec
from shared.detectors.matching import ATSSMatcher
from shared.detectors.postprocess import DetectionPostprocessor
from shared.losses.box_regression import DeltaL1Loss
from shared.losses.classification import FocalClassificationLoss
from shared.losses.segmentation import SegmentationLoss

#: loss weights: nnDetection-like (every term weighted 1)
DEFAULT_LOSS_WEIGHTS = {"classification": 1.0, "box_l1": 1.0, "box_giou": 1.0, "segmentation": 1.0}


class RetinaUNetDetector(Detector):
    """Retina U-Net training losses and inference around a network with the project's head contract.

    Args:
        network: module whose forward gives ``{"cls_logits": [...], "box_regression": [...],
            "seg_logits": ...}`` and which has ``detection_strides``, ``num_anchors``, ``num_classes``.
        anchor_sizes: per-axis anchor sizes at the first detection level (``fit_anchor_sizes``).
        matcher: anchor matcher (default ATSS with 4 candidates).
        box_coder: box coder (default weights 1).
        classification_loss: callable ``(logits (B, M, K), classes (B, M)) -> scalar``; the default is
            the paper's sigmoid focal loss, ``HardNegativeBCELoss()`` nnDetection v1's. It cannot be None.
        regression_loss: callable on (P, 6) deltas; the default is the paper's L1, ``None`` turns it off.
        giou_loss: callable on (P, 6) decoded boxes; the default ``None`` leaves it out (the paper
            trains the regression branch with L1 only), ``GIoULoss()`` adds it.
        segmentation_loss: callable on (seg_logits, seg); the default is CE + batch Dice, ``None``
            turns it off. Every loss is a built object (``_target_`` in a bundle) or ``None``.
        loss_weights: weights of ``classification``, ``box_l1``, ``box_giou``, ``segmentation``.
        score_threshold, nms_iou, topk_candidates, detections_per_image, min_size: post-processing
            (see :class:`DetectionPostprocessor`) of each input image, i.e. of each tile in
            sliding-window inference: the per-tile pre-filters (the bundles' ``tile_*`` keys), not the
            final ones, which the ``inference`` settings hold.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        anchor_sizes: Sequence[Sequence[float]],
        matcher: ATSSMatcher | None = None,
        box_coder: BoxCoder | None = None,
        classification_loss: Callable = FocalClassificationLoss(),
        regression_loss: Callable | None = DeltaL1Loss(),
        giou_loss: Callable | None = None,
        segmentation_loss: Callable | None = SegmentationLoss(),
        loss_weights: Mapping[str, float] | None = None,
        score_threshold: float = 0.05,
        nms_iou: float = 0.6,
        topk_candidates: int = 1000,
        detections_per_image: int = 100,
        min_size: float = 0.01,
    ):
        super().__init__()
        self.network = network
        self.num_classes = int(network.num_classes)
        self.anchor_generator = AnchorGenerator(anchor_sizes, network.detection_strides)
        if self.anchor_generator.num_anchors != int(network.num_anchors):
            raise ValueError(
                f"anchor_sizes give {self.anchor_generator.num_anchors} anchors per position, "
                f"the network predicts {network.num_anchors}"
            )
        self.matcher = matcher or ATSSMatcher()
        self.box_coder = box_coder or BoxCoder()
        # the default losses are shared instances: they hold settings only, no tensors or state
        if classification_loss is None:
            raise ValueError("classification_loss cannot be None: the detector needs a classification loss")
        losses = dict(classification_loss=classification_loss, regression_loss=regression_loss,
                      giou_loss=giou_loss, segmentation_loss=segmentation_loss)
        for name, loss in losses.items():
            if loss is not None and not callable(loss):
                raise ValueError(f"{name}: expected a built loss (a '_target_' node in a bundle) or None, got {loss!r}")
        self.classification_loss = classification_loss
        self.regression_loss = regression_loss
        self.giou_loss = giou_loss
        self.segmentation_loss = segmentation_loss
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss_weights keys {sorted(unknown)}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **dict(loss_weights or {})}
        self.postprocessor = DetectionPostprocessor(
            self.anchor_generator,
            self.box_coder,
            score_threshold=score_threshold,
            topk_candidates=topk_candidates,
            nms_iou=nms_iou,
            detections_per_image=detections_per_image,
            min_size=min_size,
        )

    def forward(self, images: Tensor, targets: Mapping | None = None):
        """Losses in training mode (targets required), detections in eval mode.

        Args:
            images: (B, C, X, Y, Z).
            targets: ``{"boxes": list of (N_i, 6) xyzxyz voxel, "labels": list of (N_i,),
                "seg": (B, 1, X, Y, Z)}`` (``seg`` optional when segmentation is off).

        Returns:
            training: dict of loss terms and ``"loss"`` (their weighted sum); eval: see :meth:`predict`.
        """
        if not self.training:
            return self.predict(images)
        if targets is None:
            raise ValueError("RetinaUNetDetector in training mode needs targets (boxes, labels, seg)")
        return self.compute_losses(self.network(images), targets, tuple(images.shape[2:]))

    @torch.no_grad()
    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image: ``{"boxes": (M, 6) xyzxyz voxel, "scores": (M,), "labels": (M,)}``."""
        outputs = self.network(images)
        return self.postprocessor(outputs["cls_logits"], outputs["box_regression"], tuple(images.shape[2:]))

    @property
    def score_threshold(self) -> float:
        """The per-image (per-tile) score threshold of :meth:`predict`."""
        return self.postprocessor.score_threshold

    @property
    def min_size(self) -> float:
        """The per-image (per-tile) smallest box side of :meth:`predict`."""
        return self.postprocessor.min_size

    @property
    def output_spec(self) -> OutputSpec:
        """One output ``"pred"`` (B, K + 6, M): per anchor its K class logits, then its 6 box deltas."""
        classes = f"0-{self.num_classes - 1}" if self.num_classes > 1 else "0"
        deltas = f"{self.num_classes}-{self.num_classes + BOX_DELTAS - 1}"
        return OutputSpec((ExportedOutput("pred", self.num_classes + BOX_DELTAS, {
            classes: "class logits per anchor", deltas: "box deltas per anchor"}),))

    def export_network(self) -> nn.Module:
        """The network with its heads flattened into one (B, K + 6, M) tensor (returned as a 1-tuple)."""
        return DenseOutputNetwork(self.network)

    @torch.no_grad()
    def detections_from_outputs(self, outputs, image_shape) -> list[dict[str, Tensor]]:
        """The exported (B, K + 6, M) tensor → the detections of :meth:`predict`."""
        self.output_spec.check(outputs)
        heads = split_dense_output(outputs[0], image_shape, self.network.detection_strides,
                                   self.anchor_generator.num_anchors, self.num_classes)
        return self.postprocessor(heads["cls_logits"], heads["box_regression"], tuple(image_shape))

    def compute_losses(self, outputs: Mapping, targets: Mapping, image_shape: Sequence[int]) -> dict[str, Tensor]:
        """Loss terms and their weighted sum ``"loss"`` from the network's raw outputs.

        Usable outside ``forward`` (e.g. when the training loop runs the network under autocast).
        ``image_shape`` is the spatial size of the input (unused by the anchors, which follow the
        feature maps; kept so post-processing and losses take the same arguments).
        """
        # losses in float32 even when the network ran under autocast
        cls_logits = flatten_head_outputs(outputs["cls_logits"], self.num_classes).float()  # (B, M, K)
        grids = [tuple(level.shape[2:]) for level in outputs["cls_logits"]]
        anchors = self.anchor_generator.all_anchors(grids, device=cls_logits.device)
        positions = [g[0] * g[1] * g[2] for g in grids]
        classes, positive_deltas, positive_anchors, positive_boxes = [], [], [], []
        for image, (boxes, labels) in enumerate(zip(targets["boxes"], targets["labels"])):
            image_classes, positive, matched_boxes = self._match_image(image, boxes, labels, anchors, positions)
            classes.append(image_classes)
            # the positives' deltas only: flattening all (B, M, 6) deltas cost more than the matching
            rows = torch.nonzero(positive).flatten()
            positive_deltas.append(gather_head_outputs(outputs["box_regression"], BOX_DELTAS, image, rows).float())
            positive_anchors.append(anchors[positive])
            positive_boxes.append(matched_boxes)
        losses = {"classification": self.classification_loss(cls_logits, torch.stack(classes))}
        predicted = torch.cat(positive_deltas)
        matched_anchors, matched_boxes = torch.cat(positive_anchors), torch.cat(positive_boxes)
        if self.regression_loss is not None:
            losses["box_l1"] = self.regression_loss(predicted, self.box_coder.encode(matched_boxes, matched_anchors))
        if self.giou_loss is not None:
            losses["box_giou"] = self.giou_loss(self.box_coder.decode(predicted, matched_anchors), matched_boxes)
        if self.segmentation_loss is not None and "seg_logits" in outputs:
            if targets.get("seg") is None:
                raise ValueError("the network predicts segmentation but targets have no 'seg' map")
            losses["segmentation"] = self.segmentation_loss(outputs["seg_logits"].float(), targets["seg"])
        losses["loss"] = sum(self.loss_weights[name] * value for name, value in losses.items())
        return losses

    def _match_image(self, image: int, boxes, labels, anchors: Tensor, positions: list[int]):
        """Per-anchor classes (-1 background, -2 ignored), positive mask and the positives' boxes."""
        boxes = torch.as_tensor(boxes, dtype=torch.float32, device=anchors.device).reshape(-1, 6)
        labels = torch.as_tensor(labels, dtype=torch.int64, device=anchors.device).reshape(-1)
        if len(labels) != len(boxes) or (len(labels) and not 0 <= labels.min() <= labels.max() < self.num_classes):
            raise ValueError(
                f"image {image} of the batch: {len(boxes)} boxes with labels {labels.tolist()}; "
                f"expected one label per box in 0..{self.num_classes - 1}"
            )
        matches = self.matcher(boxes, anchors, positions, self.anchor_generator.num_anchors)
        positive = matches >= 0
        classes = torch.where(positive, labels[matches.clamp(min=0)], matches) if len(labels) else matches
        return classes, positive, boxes[matches[positive]]

