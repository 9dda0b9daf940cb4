"""Export of detectors to TorchScript by tracing, and the trace-friendly views of a Retina U-Net network.

The documented, tested export path is tracing: :func:`trace_detector` traces a detector's
``export_network()`` (tensors in, the tuple of tensors its ``output_spec`` declares out) and
:func:`exported_detections` turns the traced module's outputs back into the detections of
``detector.predict`` through ``detector.detections_from_outputs``, for any detector of the interface
(:mod:`shared.detectors.interface`). Scripting (``torch.jit.script``) is not supported: the modules use
postponed annotations (``from __future__ import annotations``) and Python containers the compiler
rejects (``Unknown type annotation: 'int'``). A bundle exports its ``network_def`` with
``ckpt_export ... --network_def#dense_output True --use_trace True``, the same tensor as
:class:`DenseOutputNetwork`.

``torch.jit.trace`` accepts dict outputs only when every value is a tensor or every value a tuple of
tensors (with ``strict=False``); the network's contract mixes lists of per-level tensors with the
``seg_logits`` tensor, so neither tracing nor scripting takes it as is. :class:`FlatOutputNetwork`
returns one flat tuple instead (levels of ``cls_logits``, then of ``box_regression``, then
``seg_logits`` if present); :func:`unflatten_outputs` rebuilds the dict, so the same post-processing
applies to an exported network's raw outputs.

A network built with ``dense_output=True`` returns one (B, K + 6, M) tensor instead (the form MONAI's
``verify_net_in_out`` checks); :func:`split_dense_output` turns it back into the per-level lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from shared.detectors.anchors import flatten_head_outputs
from shared.detectors.box_coder import BOX_DELTAS
from shared.layers.strides import per_axis

if TYPE_CHECKING:
    from shared.detectors.interface import Detector


def trace_detector(detector: Detector, example: Tensor) -> torch.jit.ScriptModule:
    """TorchScript of ``detector.export_network()`` by tracing on ``example`` (B, C, X, Y, Z), in eval mode.

    The trace holds at other spatial sizes the network accepts (the heads are convolutions; tested).
    """
    was_training = detector.training
    network = detector.export_network().eval()
    with torch.no_grad():
        traced = torch.jit.trace(network, example)
    detector.train(was_training)
    return traced


@torch.no_grad()
def exported_detections(detector: Detector, exported: nn.Module, images: Tensor) -> list[dict[str, Tensor]]:
    """Detections of ``images`` (B, C, X, Y, Z) by an exported network: what ``detector.predict`` gives.

    Args:
        detector: the detector the network was exported from (its post-processing and output spec).
        exported: the traced (or loaded ``torch.jit.load``) export network.
        images: (B, C, X, Y, Z).

    Returns:
        per image ``{"boxes": (N, 6) xyzxyz voxel, "scores": (N,), "labels": (N,) int64}``.
    """
    outputs = exported(images)
    outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
    return detector.detections_from_outputs(outputs, tuple(images.shape[2:]))


class DenseOutputNetwork(nn.Module):
    """A Retina U-Net network's heads as one tensor, in a 1-tuple: ``((B, K + 6, M),)``.

    The same tensor as ``RetinaUNetNetwork(..., dense_output=True)`` (per anchor its K class logits then
    its 6 box deltas, anchors ordered level → x → y → z → anchor), without rebuilding the network.

    Args:
        network: the Retina U-Net network (its parameters are this module's, under ``network.``).
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.num_classes = int(network.num_classes)
        self.train(network.training)

    def forward(self, images: Tensor) -> tuple[Tensor]:
        """(B, C, X, Y, Z) → ``((B, K + 6, M),)``."""
        outputs = self.network(images)
        cls = flatten_head_outputs(outputs["cls_logits"], self.num_classes)  # (B, M, K)
        deltas = flatten_head_outputs(outputs["box_regression"], BOX_DELTAS)  # (B, M, 6)
        return (torch.cat([cls, deltas], dim=2).transpose(1, 2),)


class FlatOutputNetwork(nn.Module):
    """Wraps a network with the head contract; forward returns a flat tuple of tensors.

    Args:
        network: the Retina U-Net network (its parameters are this module's, under ``network.``).
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.num_levels = len(network.detection_strides)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """(B, C, X, Y, Z) → ``(*cls_logits, *box_regression[, seg_logits])``."""
        outputs = self.network(images)
        flat = tuple(outputs["cls_logits"]) + tuple(outputs["box_regression"])
        if "seg_logits" in outputs:
            flat = flat + (outputs["seg_logits"],)
        return flat


def unflatten_outputs(flat: Sequence[Tensor], num_levels: int) -> dict:
    """Inverse of :meth:`FlatOutputNetwork.forward`: the contract's dict of per-level lists."""
    if len(flat) not in (2 * num_levels, 2 * num_levels + 1):
        raise ValueError(
            f"expected {2 * num_levels} or {2 * num_levels + 1} outputs for {num_levels} levels, got {len(flat)}"
        )
    outputs = {"cls_logits": list(flat[:num_levels]), "box_regression": list(flat[num_levels : 2 * num_levels])}
    if len(flat) == 2 * num_levels + 1:
        outputs["seg_logits"] = flat[-1]
    return outputs


def split_dense_output(
    dense: Tensor, image_shape: Sequence[int], strides: Sequence[int], num_anchors: int, num_classes: int
) -> dict[str, list[Tensor]]:
    """Inverse of a ``dense_output`` network's forward: the per-level head outputs.

    Args:
        dense: (B, K + 6, M) class logits then box deltas per anchor, anchors ordered level → x → y →
            z → anchor (``shared.detectors.anchors.flatten_head_outputs``).
        image_shape: spatial size (X, Y, Z) of the network's input.
        strides: the network's ``detection_strides``, fine → coarse (each an int or one per axis,
            dividing ``image_shape``).
        num_anchors: anchors per position A.
        num_classes: foreground classes K.

    Returns:
        ``{"cls_logits": [(B, A·K, X_l, Y_l, Z_l)], "box_regression": [(B, A·6, X_l, Y_l, Z_l)]}``, the
        lists the detector's post-processing takes.
    """
    grids = [tuple(int(size) // axis for size, axis in zip(image_shape, per_axis(stride, len(image_shape), "strides")))
             for stride in strides]
    expected = sum(g[0] * g[1] * g[2] for g in grids) * num_anchors
    if dense.dim() != 3 or dense.shape[1] != num_classes + BOX_DELTAS or dense.shape[2] != expected:
        raise ValueError(
            f"dense output of shape {tuple(dense.shape)} does not fit an image of {tuple(image_shape)} with "
            f"strides {list(strides)}, {num_anchors} anchors and {num_classes} classes: expected "
            f"(B, {num_classes + BOX_DELTAS}, {expected})"
        )
    outputs: dict[str, list[Tensor]] = {"cls_logits": [], "box_regression": []}
    start = 0
    for grid in grids:
        count = grid[0] * grid[1] * grid[2] * num_anchors
        level = dense[:, :, start : start + count]
        start += count
        for key, channels in (("cls_logits", slice(0, num_classes)), ("box_regression", slice(num_classes, None))):
            values = level[:, channels]  # (B, C, XYZ·A), anchor fastest
            batch, width = values.shape[:2]
            values = values.reshape(batch, width, -1, num_anchors).permute(0, 3, 1, 2)  # (B, A, C, XYZ)
            outputs[key].append(values.reshape(batch, num_anchors * width, *grid))
    return outputs
