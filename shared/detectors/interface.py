"""The detector interface: what sliding-window inference, validation, the post-processing sweep and
export use of a detector, and nothing more.

A detector is an ``nn.Module`` that

- holds its trainable network as ``network`` (the module whose state dict is the bundle's ``model.pt``,
  what ``network_def`` builds);
- in training mode, ``forward(images, targets)`` returns a dict of scalar losses with ``"loss"``;
- ``predict(images)`` returns, per image (a patch in sliding-window inference), its boxes, scores and
  labels: everything the consumers need, whatever the head (anchors, queries, heat maps);
- declares what its exported network returns (:attr:`Detector.output_spec`), gives that network
  (:meth:`Detector.export_network`: tensors in, a tuple of tensors out, so ``torch.jit.trace`` takes it)
  and turns its outputs back into the detections of ``predict`` (:meth:`Detector.detections_from_outputs`);
- names the per-patch filters ``predict`` applies (``score_threshold``, ``min_size``; 0 when it applies
  none), so a final filter below them, which would change nothing, can be refused.

What a detector needs from the training data (Retina U-Net: anchor sizes fitted to the boxes) is
planned by its own function (:mod:`shared.detectors.planning`) and stored under the model plan's
``"detector"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class ExportedOutput:
    """One tensor returned by a detector's exported network.

    Attributes:
        name: its key in the bundle's ``metadata.json`` (``network_data_format.outputs``).
        num_channels: its size along dimension 1.
        channel_def: what the channels mean (``{"0-1": "class logits", ...}``).
    """

    name: str
    num_channels: int
    channel_def: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputSpec:
    """What a detector's exported network returns, in order (see :meth:`Detector.export_network`)."""

    outputs: tuple[ExportedOutput, ...]

    def check(self, outputs: Sequence[Tensor]) -> None:
        """Raise ``ValueError`` unless ``outputs`` has one tensor per declared output, with its channels."""
        if len(outputs) != len(self.outputs):
            raise ValueError(f"the exported network returned {len(outputs)} tensor(s); its output spec declares "
                             f"{len(self.outputs)} ({', '.join(o.name for o in self.outputs)})")
        for declared, tensor in zip(self.outputs, outputs):
            if tensor.dim() < 2 or tensor.shape[1] != declared.num_channels:
                raise ValueError(f"exported output {declared.name!r} has shape {tuple(tensor.shape)}; its spec "
                                 f"declares {declared.num_channels} channels on dimension 1")

    def network_data_format(self) -> dict[str, dict[str, Any]]:
        """The ``network_data_format.outputs`` entries of a bundle's ``metadata.json`` for this spec."""
        return {
            output.name: {"type": "object", "format": "raw", "num_channels": output.num_channels,
                          "spatial_shape": ["*"], "dtype": "float32", "value_range": [], "is_patch_data": True,
                          "channel_def": dict(output.channel_def)}
            for output in self.outputs
        }


class Detector(nn.Module):
    """Base class of the project's detectors (see the module docstring for the contract).

    Subclasses set ``self.network`` and implement :meth:`forward` (training losses), :meth:`predict`,
    :meth:`export_network`, :attr:`output_spec` and :meth:`detections_from_outputs`.

    Attributes:
        score_threshold: smallest score ``predict`` keeps per patch (0: no filter).
        min_size: smallest box side, voxels, ``predict`` keeps per patch (0: no filter).
    """

    score_threshold: float = 0.0
    min_size: float = 0.0

    def forward(self, images: Tensor, targets: Mapping | None = None) -> Any:
        """Training: ``{"loss": ..., <terms>}`` from images (B, C, X, Y, Z) and ``targets = {"boxes":
        [(N_i, 6) xyzxyz voxel], "labels": [(N_i,) int64], "seg": optional (B, 1, X, Y, Z)}``."""
        raise NotImplementedError

    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Per image of (B, C, X, Y, Z): ``{"boxes": (N, 6) xyzxyz voxel of that image, "scores": (N,),
        "labels": (N,) int64}``."""
        raise NotImplementedError

    @property
    def output_spec(self) -> OutputSpec:
        """What :meth:`export_network` returns."""
        raise NotImplementedError

    def export_network(self) -> nn.Module:
        """A module sharing this detector's parameters whose forward maps images (B, C, X, Y, Z) to a
        tuple of tensors as :attr:`output_spec` declares (traceable by ``torch.jit.trace``)."""
        raise NotImplementedError

    def detections_from_outputs(self, outputs: Sequence[Tensor], image_shape: Sequence[int]) -> list[dict[str, Tensor]]:
        """The exported network's outputs for images of spatial size ``image_shape`` → what
        :meth:`predict` returns for them."""
        raise NotImplementedError
