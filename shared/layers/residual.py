"""ResNet-D basic residual blocks (the ResEnc encoder's), named like dynamic-network-architectures'.

Block: ``conv1`` (conv(stride)-norm-act) → ``conv2`` (conv-norm), plus a ``skip`` that is the identity,
or ``AvgPool(stride)`` (ResNet-D: pool instead of a strided 1×1 conv) and/or a bias-free 1×1
conv + norm (``skip.1``) when the shape changes; the activation ``nonlin2`` follows the addition.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Pool
from torch import nn

from shared.layers.blocks import ConvNormAct, repeat_blocks
from shared.layers.specs import DEFAULT_ACT, DEFAULT_NORM, LayerSpec, build_activation


def _is_strided(stride: int | Sequence[int]) -> bool:
    return any(s != 1 for s in ((stride,) if isinstance(stride, int) else stride))


class BasicResidualBlock(nn.Module):
    """ResNet-D basic block (DNA's ``BasicBlockD``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel of the two main-path convolutions.
        stride: stride of ``conv1`` and of the skip's pooling.
        spatial_dims: 1, 2 or 3.
        norm: normalisation spec.
        act: activation spec (after ``conv1`` and after the addition).
        bias: bias of the main-path convolutions (the skip's 1×1 conv never has one).

    Shape:
        (B, in_channels, X, Y, Z) → (B, out_channels, X / stride, Y / stride, Z / stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        *,
        stride: int | Sequence[int] = 1,
        spatial_dims: int = 3,
        norm: LayerSpec = DEFAULT_NORM,
        act: LayerSpec = DEFAULT_ACT,
        bias: bool = True,
    ):
        super().__init__()
        layer = dict(spatial_dims=spatial_dims, norm=norm, bias=bias)
        self.conv1 = ConvNormAct(in_channels, out_channels, kernel_size, stride=stride, act=act, **layer)
        self.conv2 = ConvNormAct(out_channels, out_channels, kernel_size, act=None, **layer)
        self.nonlin2 = build_activation(act) or nn.Identity()
        skip: list[nn.Module] = []
        if _is_strided(stride):
            skip.append(Pool[Pool.AVG, spatial_dims](stride, stride))
        if in_channels != out_channels:
            skip.append(ConvNormAct(in_channels, out_channels, 1, spatial_dims=spatial_dims, norm=norm, act=None,
                                    bias=False))
        # An empty Sequential is the identity and keeps the key layout (`skip.1`) of DNA.
        self.skip = nn.Sequential(*skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin2(self.conv2(self.conv1(x)) + self.skip(x))


class StackedResidualBlocks(nn.Module):
    """``num_blocks`` basic residual blocks (``blocks.{i}``); only the first is strided.

    Args:
        num_blocks: number of blocks (at least 1).
        in_channels: input channels of the first block.
        out_channels: channels of every block's output.
        kernel_size: main-path kernel.
        stride: stride of the first block.
        spatial_dims: 1, 2 or 3.
        norm: normalisation spec.
        act: activation spec.
        bias: main-path convolution bias.

    Shape:
        (B, in_channels, X, Y, Z) → (B, out_channels, X / stride, Y / stride, Z / stride).
    """

    def __init__(
        self,
        num_blocks: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        *,
        stride: int | Sequence[int] = 1,
        spatial_dims: int = 3,
        norm: LayerSpec = DEFAULT_NORM,
        act: LayerSpec = DEFAULT_ACT,
        bias: bool = True,
    ):
        super().__init__()
        self.blocks = repeat_blocks(
            BasicResidualBlock, num_blocks, in_channels, out_channels, kernel_size, stride=stride,
            count_name="num_blocks", spatial_dims=spatial_dims, norm=norm, act=act, bias=bias,
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)
