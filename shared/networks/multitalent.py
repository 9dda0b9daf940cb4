"""The MultiTalent network: one stem per data set, a shared encoder and U-Net decoder, per-data-set outputs.

MultiTalent (Ulrich et al., MICCAI 2023) trains one segmentation network on many data sets whose images
have different channel counts and whose label maps name different classes. Every data set gets its own
stem (the layer that reads the input channels and maps them to the first stage's width); the encoder
from there on, the decoder and the final 1×1 convolution are shared; the output holds one block of
channels per data set (its softmax classes with background, or its sigmoid regions), and the loss
(:mod:`shared.losses.multitalent`) looks only at the block of the sample's own data set. A block of the
shared 1×1 convolution is the same as a per-data-set head.

The stem is what the encoder declares in ``stem_keys``: ``stem`` of the ResEnc encoder, the first
conv-norm-act block ``stages.0.0.convs.0`` of the plain encoder (Retina U-Net's), so the plain encoder
needs no new module and its checkpoints keep their keys. The network moves the encoder's own stem out
(an identity takes its place inside the encoder) and holds the data sets' stems under
``stems.<data set id>.*``; the encoder's keys are otherwise those of a detector's encoder, and
:func:`shared.ssl.multitalent.multitalent_encoder_weights` puts a chosen stem back for export.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shared.decoders.unet import UNetDecoder
from shared.encoders import Encoder, build_encoder, check_divisible
from shared.layers import initialize_kaiming

DEFAULT_ENCODER_SPEC: dict[str, Any] = {"name": "resenc", "preset": "paper"}
#: ``softmax``: CE + Dice over background and the classes (K + 1 channels); ``regions``: BCE + Dice
#: over possibly overlapping regions, each a set of labels (one sigmoid channel per region)
OUTPUT_KINDS = ("softmax", "regions")


@dataclass(frozen=True)
class SegmentationTask:
    """One pre-training data set as the network and loss see it.

    Attributes:
        name: the data set's id (a stem id in the exported manifest); no dots.
        in_channels: image channels of its cases.
        classes: names of its labels 1..K in the label map (0 is background).
        kind: ``"softmax"`` or ``"regions"``.
        regions: with ``"regions"``, one list of labels per output channel (a channel's target is
            "the label is one of these"); default one region per class.
    """

    name: str
    in_channels: int
    classes: tuple[str, ...]
    kind: str = "softmax"
    regions: tuple[tuple[int, ...], ...] | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | SegmentationTask) -> SegmentationTask:
        """From ``{"name", "in_channels", "classes", "kind"?, "regions"?}`` (a bundle's JSON)."""
        if isinstance(spec, SegmentationTask):
            return spec
        unknown = set(spec) - {"name", "in_channels", "classes", "kind", "regions"}
        if unknown or not {"name", "in_channels", "classes"} <= set(spec):
            raise ValueError(f"a task is {{'name', 'in_channels', 'classes', 'kind'?, 'regions'?}}, got {dict(spec)!r}")
        regions = spec.get("regions")
        task = cls(str(spec["name"]), int(spec["in_channels"]), tuple(str(c) for c in spec["classes"]),
                   str(spec.get("kind", "softmax")),
                   None if regions is None else tuple(tuple(int(label) for label in r) for r in regions))
        task.check()
        return task

    def check(self) -> None:
        """Raises ``ValueError`` naming the task for an unusable description."""
        if not self.name or "." in self.name:
            raise ValueError(f"task name {self.name!r}: must be non-empty without dots (it becomes a state-dict key)")
        if self.in_channels < 1 or not self.classes:
            raise ValueError(f"task {self.name!r}: needs in_channels >= 1 and at least one class")
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {OUTPUT_KINDS}, got {self.kind!r}")
        labels = range(1, len(self.classes) + 1)
        if self.kind == "regions" and any(not r or not set(r) <= set(labels) for r in self.label_regions):
            raise ValueError(f"task {self.name!r}: every region is a non-empty list of labels 1..{len(self.classes)}")

    @property
    def label_regions(self) -> tuple[tuple[int, ...], ...]:
        """The regions of a ``"regions"`` task (one per class unless given)."""
        return self.regions or tuple((label,) for label in range(1, len(self.classes) + 1))

    @property
    def out_channels(self) -> int:
        """Output channels of the task: K + 1 for softmax, one per region otherwise."""
        return len(self.classes) + 1 if self.kind == "softmax" else len(self.label_regions)


def read_tasks(tasks: Sequence[Mapping[str, Any] | SegmentationTask]) -> list[SegmentationTask]:
    """Tasks from specs, checking that names are unique."""
    read = [SegmentationTask.from_spec(task) for task in tasks]
    names = [task.name for task in read]
    if not read or len(set(names)) != len(names):
        raise ValueError(f"tasks: expected at least one, with unique names, got {names}")
    return read


def stem_path(encoder: Encoder) -> str:
    """Dotted module path of the encoder's stem, from its first ``stem_keys`` prefix."""
    return tuple(getattr(encoder, "stem_keys", None) or ("stem.",))[0].rstrip(".")


def stem_for_channels(stem: nn.Module, in_channels: int) -> nn.Module:
    """A fresh copy of ``stem`` whose first convolution reads ``in_channels`` channels (He-initialised)."""
    stem = copy.deepcopy(stem)
    name, conv = next((n, m) for n, m in stem.named_modules() if isinstance(m, nn.modules.conv._ConvNd))
    new = type(conv)(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
    if name:
        stem.set_submodule(name, new)
    else:
        stem = new
    for module in stem.modules():
        if hasattr(module, "in_channels") and not isinstance(module, nn.modules.conv._ConvNd):
            module.in_channels = in_channels  # the blocks' recorded widths follow the new conv
    initialize_kaiming(stem)
    for module in stem.modules():
        if hasattr(module, "reset_parameters") and not isinstance(module, nn.modules.conv._ConvNd):
            module.reset_parameters()
    return stem


class MultiTalentNetwork(nn.Module):
    """Per-data-set stems → shared encoder → shared U-Net decoder → every task's output channels.

    Args:
        tasks: the data sets, as :class:`SegmentationTask` or their JSON specs; their order fixes
            the output channel blocks and the integer data set indices.
        encoder_spec: a spec for :func:`shared.encoders.build_encoder` (ResEnc-L by default; the
            plain encoder for Retina U-Net's).
        decoder_convs_per_stage: conv blocks per decoder stage.
        deep_supervision: also return the coarser decoder stages' outputs (nnU-Net's and MultiTalent's
            deep supervision).

    Shape:
        ``forward(images (B, C_max, X, Y, Z), datasets)`` → ``{"seg_logits": (B, ΣC_d, X, Y, Z)}``;
        sample b uses its data set's first C_d channels; task d's logits are channels
        ``channel_slices[d]``. X, Y, Z divisible by the encoder's coarsest stride. With deep supervision
        also ``"deep_supervision"``: a list of (B, ΣC_d, X / s_l, Y / s_l, Z / s_l), fine → coarse, from
        the second finest decoder stage on.
    """

    def __init__(
        self,
        tasks: Sequence[Mapping[str, Any] | SegmentationTask],
        *,
        encoder_spec: dict[str, Any] | None = None,
        decoder_convs_per_stage: int | Sequence[int] = 1,
        deep_supervision: bool = False,
    ):
        super().__init__()
        self.tasks = read_tasks(tasks)
        self.task_names = [task.name for task in self.tasks]
        self.encoder_spec = copy.deepcopy(DEFAULT_ENCODER_SPEC if encoder_spec is None else encoder_spec)
        self.encoder = build_encoder(self.encoder_spec, self.tasks[0].in_channels)
        path = stem_path(self.encoder)
        template = self.encoder.get_submodule(path)
        self.stem_width = int(template.out_channels)
        self.stems = nn.ModuleDict({task.name: stem_for_channels(template, task.in_channels) for task in self.tasks})
        self.encoder.set_submodule(path, nn.Identity())
        self.encoder.in_channels = self.stem_width  # the encoder now starts after the stem
        self.encoder_stem_path = path
        self.encoder_prefix = "encoder."
        self.max_in_channels = max(task.in_channels for task in self.tasks)
        self.channel_slices: dict[str, slice] = {}
        start = 0
        for task in self.tasks:
            self.channel_slices[task.name] = slice(start, start + task.out_channels)
            start += task.out_channels
        self.out_channels = start
        self.decoder = UNetDecoder(
            self.encoder.feature_info, self.out_channels, convs_per_stage=decoder_convs_per_stage,
            kernel_sizes=getattr(self.encoder, "kernel_sizes", 3), spatial_dims=self.encoder.spatial_dims,
            deep_supervision=deep_supervision,
        )
        self.deep_supervision = bool(deep_supervision)

    def dataset_indices(self, datasets: torch.Tensor | Sequence[str | int], batch: int) -> list[int]:
        """Each sample's task index from names or indices (a collated ``"dataset"`` entry)."""
        if isinstance(datasets, torch.Tensor):
            datasets = datasets.reshape(-1).tolist()
        indices = [self.task_names.index(d) if isinstance(d, str) and d in self.task_names else d for d in datasets]
        if len(indices) != batch or not all(isinstance(i, int) and 0 <= i < len(self.tasks) for i in indices):
            raise ValueError(f"datasets: expected {batch} names of {self.task_names} or indices, got {list(datasets)}")
        return indices

    def stem_features(self, images: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        """Every sample through its own data set's stem (grouped by data set, batch order kept).

        Args:
            images: (B, C_max, X, Y, Z); sample b's first ``in_channels`` of its task are read.
            indices: task index per sample.

        Returns:
            (B, stem_width, X', Y', Z').
        """
        groups: dict[int, list[int]] = {}
        for position, index in enumerate(indices):
            groups.setdefault(index, []).append(position)
        outputs, order = [], []
        for index, positions in groups.items():
            task = self.tasks[index]
            if images.shape[1] < task.in_channels:
                raise ValueError(f"task {task.name!r} needs {task.in_channels} channels, "
                                 f"the images have {images.shape[1]}")
            selected = images[torch.as_tensor(positions, device=images.device), : task.in_channels]
            outputs.append(self.stems[task.name](selected))
            order += positions
        inverse = torch.empty(len(order), dtype=torch.long, device=images.device)
        inverse[torch.as_tensor(order, device=images.device)] = torch.arange(len(order), device=images.device)
        return torch.cat(outputs)[inverse]

    def forward(self, images: torch.Tensor, datasets: torch.Tensor | Sequence[str | int]) -> dict[str, torch.Tensor]:
        """Args:
            images: (B, C_max, X, Y, Z), channels beyond a sample's own zero or anything.
            datasets: per sample its task name or index.

        Returns:
            ``{"seg_logits": (B, out_channels, X, Y, Z)}``, with deep supervision also
            ``"deep_supervision"`` (the coarser outputs, fine → coarse).
        """
        check_divisible(images, self.encoder.feature_info[-1]["stride"], type(self).__name__)
        indices = self.dataset_indices(datasets, images.shape[0])
        decoded = self.decoder(self.encoder(self.stem_features(images, indices)))
        if not self.deep_supervision:
            return {"seg_logits": decoded}
        return {"seg_logits": decoded[0], "deep_supervision": list(decoded[1:])}
