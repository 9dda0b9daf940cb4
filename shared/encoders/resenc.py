"""The residual encoder (nnU-Net ResEnc, nnssl's pre-training backbone).

A stem (one conv-norm-act) then stages of ResNet-D basic blocks, the first block of each stage strided.
Keys follow dynamic-network-architectures' ``ResidualEncoder`` (``stem.convs.0.conv.*``,
``stages.{s}.blocks.{b}.conv1.conv.*``, ``...skip.1.conv.*``), so a released nnssl
``ResidualEncoderUNet``'s ``encoder.*`` weights load after stripping the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shared.encoders.base import Encoder
from shared.layers import (
    BasicResidualBlock,
    LayerSpec,
    StackedConvBlocks,
    StackedResidualBlocks,
    initialize_kaiming,
    per_stage,
    per_stage_per_axis,
)
from shared.layers.specs import DEFAULT_ACT, DEFAULT_NORM


class ResidualEncoder(Encoder):
    """Stem + stages of ResNet-D basic residual blocks (ResEnc-L with the default arguments).

    Args:
        in_channels: input channels.
        features: channels per stage (fine → coarse); its length sets the number of stages.
        strides: stride of each stage's first block: one entry per stage, each an int or one int per
            axis (``[1, [2, 2, 1], 2]`` for anisotropic data); a scalar broadcasts.
        blocks_per_stage: residual blocks per stage (a scalar broadcasts).
        kernel_sizes: kernel per stage, each an int or one per axis; a scalar broadcasts; the stem
            uses the first.
        stem_channels: stem width; ``None`` means ``features[0]``.
        spatial_dims: 1, 2 or 3.
        norm: normalisation spec.
        act: activation spec.
        conv_bias: bias of the stem and main-path convolutions (skip 1×1 convs have none).
        zero_init_residual: start every block's last norm at zero so blocks begin as identities
            (nnU-Net's ``init_last_bn_before_add_to_0``).

    Shape:
        (B, in_channels, X, Y, Z) → list over stages of (B, features[s], X / stride_s, ...).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        features: Sequence[int] = (32, 64, 128, 256, 320, 320),
        strides: int | Sequence[int | Sequence[int]] = (1, 2, 2, 2, 2, 2),
        blocks_per_stage: int | Sequence[int] = (1, 3, 4, 6, 6, 6),
        kernel_sizes: int | Sequence[int | Sequence[int]] = 3,
        stem_channels: int | None = None,
        spatial_dims: int = 3,
        norm: LayerSpec = DEFAULT_NORM,
        act: LayerSpec = DEFAULT_ACT,
        conv_bias: bool = True,
        zero_init_residual: bool = True,
    ):
        super().__init__()
        features = [int(f) for f in features]
        num_stages = len(features)
        strides = per_stage_per_axis(strides, num_stages, spatial_dims, "strides")
        blocks_per_stage = per_stage(blocks_per_stage, num_stages, "blocks_per_stage")
        kernel_sizes = per_stage_per_axis(kernel_sizes, num_stages, spatial_dims, "kernel_sizes")
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.kernel_sizes = kernel_sizes
        layer = dict(spatial_dims=spatial_dims, norm=norm, act=act, bias=conv_bias)
        stem_channels = features[0] if stem_channels is None else stem_channels
        self.stem = StackedConvBlocks(1, in_channels, stem_channels, kernel_sizes[0], **layer)
        stages, previous = [], stem_channels
        for width, stride, num_blocks, kernel in zip(features, strides, blocks_per_stage, kernel_sizes):
            stages.append(StackedResidualBlocks(num_blocks, previous, width, kernel, stride=stride, **layer))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.stem_keys = ("stem.",)
        self._declare_levels(features, strides)
        initialize_kaiming(self)
        if zero_init_residual:
            for block in self.modules():
                if isinstance(block, BasicResidualBlock) and block.conv2.norm is not None:
                    nn.init.zeros_(block.conv2.norm.weight)
                    nn.init.zeros_(block.conv2.norm.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            x: (B, in_channels, X, Y, Z).

        Returns:
            One feature map per stage, fine → coarse.
        """
        self.check_input(x)
        return self._run_stages(self.stem(x))
