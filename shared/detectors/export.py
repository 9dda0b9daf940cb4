"""A trace-friendly view of a Retina U-Net network, and the way back to its dict outputs.

``torch.jit.trace`` accepts dict outputs only when every value is a tensor or every value a tuple of
tensors (with ``strict=False``); the network's contract mixes lists of per-level tensors with the
``seg_logits`` tensor, so neither tracing nor scripting takes it as is. :class:`FlatOutputNetwork`
returns one flat tuple instead (levels of ``cls_logits``, then of ``box_regression``, then
``seg_logits`` if present); :func:`unflatten_outputs` rebuilds the dict, so the same post-processing
applies to an exported network's raw outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


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
