"""The U-FPN decoder of Retina U-Net (nnDetection's ``UFPNModular`` with its default settings).

Every encoder level gets a 1×1 lateral conv; the top-down path upsamples the coarser map with a
transposed conv (kernel = stride = level ratio, per axis) and adds it to the finer lateral; an output 3×3 conv
follows at each level that is used. Laterals, upsampling and outputs have no norm/activation and
a bias, as in nnDetection's defaults. Levels used for detection have ``channels`` (128) features;
finer levels, which only serve segmentation, halve towards the input (never below
``min_channels``), keeping the fine, large maps cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from shared.decoders.levels import find_level, read_levels
from shared.layers import initialize_kaiming
from shared.layers.blocks import same_padding


class UFPNDecoder(nn.Module):
    """U-shaped feature pyramid over all encoder levels.

    Args:
        feature_info: the encoder's ``[{"channels", "stride"}, ...]`` fine → coarse.
        channels: features at the detection levels and coarser.
        detection_strides: cumulative strides of the detection levels, each naming an encoder level
            (an int, or one per axis on an anisotropic encoder; see
            :func:`shared.decoders.levels.find_level`).
        output_strides: levels that get an output conv and are returned (named the same way);
            ``None`` means the detection levels plus the finest level (for the segmentation head).
        min_channels: lower bound for the halved channels of the fine levels.
        kernel_size: kernel of the output convs.
        upsampling: ``"transpose"`` (nnDetection's Retina U-Net), or an ``nn.Upsample`` mode
            (``"nearest"``, ``"trilinear"``) followed by a 1×1 conv where channels change.
        spatial_dims: 1, 2 or 3.

    Shape:
        list of (B, C_l, X / s_l, ...) per encoder level → list of (B, c, X / s, ...) per output
        level, fine → coarse, as declared in ``feature_info``.
    """

    def __init__(
        self,
        feature_info: Sequence[dict],
        *,
        channels: int = 128,
        detection_strides: Sequence[int | Sequence[int]] = (4, 8, 16, 32),
        output_strides: Sequence[int | Sequence[int]] | None = None,
        min_channels: int = 8,
        kernel_size: int = 3,
        upsampling: str = "transpose",
        spatial_dims: int = 3,
    ):
        super().__init__()
        in_channels, strides, ratios = read_levels(feature_info, spatial_dims)
        detection_levels = [find_level(strides, s, spatial_dims) for s in detection_strides]
        if output_strides is None:
            output_levels = {0, *detection_levels}
        else:
            output_levels = {find_level(strides, s, spatial_dims, "output stride") for s in output_strides}
        self.level_channels = self._level_channels(len(strides), min(detection_levels), channels, min_channels)
        self.output_levels = sorted(output_levels)
        self.feature_info = [{"channels": self.level_channels[l], "stride": strides[l]} for l in self.output_levels]
        self.num_levels = len(strides)
        # Levels finer than the finest output feed nothing: they are not built at all.
        used = range(self.output_levels[0], self.num_levels)
        conv = Conv[Conv.CONV, spatial_dims]
        width = self.level_channels
        self.lateral = nn.ModuleDict({f"P{l}": conv(in_channels[l], width[l], 1) for l in used})
        self.up = nn.ModuleDict(
            {f"P{l}": self._upsampling(upsampling, width[l + 1], width[l], ratios[l], spatial_dims) for l in used[:-1]}
        )
        self.out = nn.ModuleDict(
            {f"P{l}": conv(width[l], width[l], kernel_size, padding=same_padding(kernel_size)) for l in self.output_levels}
        )
        initialize_kaiming(self)

    @staticmethod
    def _level_channels(num_levels: int, finest_detection: int, channels: int, min_channels: int) -> list[int]:
        widths = [channels] * num_levels
        for level in reversed(range(finest_detection)):
            widths[level] = max(min_channels, widths[level + 1] // 2)
        return widths

    @staticmethod
    def _upsampling(mode: str, coarse: int, fine: int, ratio: int | tuple[int, ...], spatial_dims: int) -> nn.Module:
        if mode == "transpose":
            return Conv[Conv.CONVTRANS, spatial_dims](coarse, fine, ratio, stride=ratio)
        upsample = nn.Upsample(scale_factor=ratio, mode=mode)
        if coarse == fine:
            return upsample
        return nn.Sequential(upsample, Conv[Conv.CONV, spatial_dims](coarse, fine, 1))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Args:
            features: the encoder's maps, fine → coarse (one per ``feature_info`` entry).

        Returns:
            The output levels' maps, fine → coarse.
        """
        if len(features) != self.num_levels:
            raise ValueError(f"UFPNDecoder was built for {self.num_levels} levels, got {len(features)} feature maps")
        fused: dict[int, torch.Tensor] = {}
        for level in reversed(range(self.output_levels[0], self.num_levels)):
            x = self.lateral[f"P{level}"](features[level])
            if level + 1 in fused:
                # `up["P{l}"]` brings level l + 1 to level l's size and width.
                x = x + self.up[f"P{level}"](fused[level + 1])
            fused[level] = x
        return [self.out[f"P{level}"](fused[level]) for level in self.output_levels]
