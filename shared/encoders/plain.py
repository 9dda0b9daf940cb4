"""The plain conv encoder of Retina U-Net / nnU-Net: stages of conv-norm-act blocks, first conv strided.

Keys follow dynamic-network-architectures' ``PlainConvEncoder`` (``stages.{s}.0.convs.{i}.conv.*``),
so a ``PlainConvUNet``'s ``encoder.*`` weights load after stripping the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shared.encoders.base import Encoder
from shared.layers import LayerSpec, StackedConvBlocks, initialize_kaiming, per_stage, per_stage_per_axis
from shared.layers.specs import DEFAULT_ACT, DEFAULT_NORM


class PlainConvEncoder(Encoder):
    """Stages of ``convs_per_stage`` × (conv, norm, act); the first conv of each stage is strided.

    Args:
        in_channels: input channels.
        features: channels per stage (fine → coarse); its length sets the number of stages.
        strides: stride of each stage's first conv: one entry per stage, each an int or one int per
            axis (``[1, [2, 2, 1], 2]`` for anisotropic data); a scalar broadcasts.
        convs_per_stage: conv blocks per stage (a scalar broadcasts).
        kernel_sizes: kernel per stage, each an int or one per axis (``[3, 1]`` pairs with no
            pooling of a coarse axis); a scalar broadcasts.
        spatial_dims: 1, 2 or 3.
        norm: normalisation spec.
        act: activation spec.
        conv_bias: convolution bias.

    Shape:
        (B, in_channels, X, Y, Z) → list over stages of (B, features[s], X / stride_s, ...), where
        ``stride_s`` is ``feature_info[s]["stride"]``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        features: Sequence[int] = (32, 64, 128, 256, 320, 320),
        strides: int | Sequence[int | Sequence[int]] = (1, 2, 2, 2, 2, 2),
        convs_per_stage: int | Sequence[int] = 2,
        kernel_sizes: int | Sequence[int | Sequence[int]] = 3,
        spatial_dims: int = 3,
        norm: LayerSpec = DEFAULT_NORM,
        act: LayerSpec = DEFAULT_ACT,
        conv_bias: bool = True,
    ):
        super().__init__()
        features = [int(f) for f in features]
        num_stages = len(features)
        strides = per_stage_per_axis(strides, num_stages, spatial_dims, "strides")
        convs_per_stage = per_stage(convs_per_stage, num_stages, "convs_per_stage")
        kernel_sizes = per_stage_per_axis(kernel_sizes, num_stages, spatial_dims, "kernel_sizes")
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.kernel_sizes = kernel_sizes
        stages, previous = [], in_channels
        for width, stride, num_convs, kernel in zip(features, strides, convs_per_stage, kernel_sizes):
            blocks = StackedConvBlocks(
                num_convs, previous, width, kernel, stride=stride, spatial_dims=spatial_dims,
                norm=norm, act=act, bias=conv_bias,
            )
            # The extra Sequential level reproduces DNA's keys (`stages.{s}.0.convs...`).
            stages.append(nn.Sequential(blocks))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.stem_keys = ("stages.0.0.convs.0.",)
        self._declare_levels(features, strides)
        initialize_kaiming(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            x: (B, in_channels, X, Y, Z).

        Returns:
            One feature map per stage, fine → coarse.
        """
        self.check_input(x)
        return self._run_stages(x)
