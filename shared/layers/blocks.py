"""Conv → norm → activation blocks, named like dynamic-network-architectures' blocks.

``ConvNormAct`` holds ``conv``, ``norm`` and ``nonlin`` — the keys of DNA's ``ConvDropoutNormReLU``
(``*.conv.weight``, ``*.norm.weight``) — so nnU-Net / nnssl state dicts load by name. DNA registers
the same layers a second time under ``all_modules.{i}``; those alias keys are dropped on loading.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from shared.layers.specs import DEFAULT_ACT, DEFAULT_NORM, LayerSpec, build_activation, build_norm

# DNA's ConvDropoutNormReLU stores each layer twice (as an attribute and inside `all_modules`).
FOREIGN_ALIAS_PREFIX = "all_modules."


def same_padding(kernel_size: int | Sequence[int]) -> int | tuple[int, ...]:
    """Padding that keeps the size for odd kernels at stride 1: ``(k - 1) // 2`` per axis."""
    if isinstance(kernel_size, int):
        return (kernel_size - 1) // 2
    return tuple((k - 1) // 2 for k in kernel_size)


def _drop_foreign_aliases(module, state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + FOREIGN_ALIAS_PREFIX)]:
        del state_dict[key]


def repeat_blocks(block: type[nn.Module], count: int, in_channels: int, out_channels: int,
                  kernel_size: int | Sequence[int], *, stride: int | Sequence[int], count_name: str,
                  **layer) -> nn.Sequential:
    """``count`` blocks in a row: the first strided and taking ``in_channels``, the rest ``out → out``.

    Raises:
        ValueError: naming ``count_name`` when ``count`` is below 1.
    """
    if count < 1:
        raise ValueError(f"{count_name} must be at least 1, got {count}")
    return nn.Sequential(
        block(in_channels, out_channels, kernel_size, stride=stride, **layer),
        *[block(out_channels, out_channels, kernel_size, **layer) for _ in range(count - 1)],
    )


class ConvNormAct(nn.Module):
    """One convolution, then an optional normalisation, then an optional activation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size (int or one per axis); padding keeps the size at stride 1.
        stride: convolution stride.
        spatial_dims: 1, 2 or 3.
        norm: normalisation spec, ``None`` for none.
        act: activation spec, ``None`` for none.
        bias: whether the convolution has a bias.

    Shape:
        (B, in_channels, X, Y, Z) → (B, out_channels, ceil(X / stride), ...).
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
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv = Conv[Conv.CONV, spatial_dims](
            in_channels, out_channels, kernel_size, stride=stride, padding=same_padding(kernel_size), bias=bias
        )
        self.norm = build_norm(norm, out_channels, spatial_dims)
        self.nonlin = build_activation(act)
        self.register_load_state_dict_pre_hook(_drop_foreign_aliases)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.nonlin is not None:
            x = self.nonlin(x)
        return x


class StackedConvBlocks(nn.Module):
    """``num_convs`` ConvNormAct blocks in a row (``convs.{i}``), the first one strided.

    Args:
        num_convs: number of blocks (at least 1).
        in_channels: input channels of the first block.
        out_channels: output channels of every block.
        kernel_size: kernel size of every block.
        stride: stride of the first block.
        spatial_dims: 1, 2 or 3.
        norm: normalisation spec.
        act: activation spec.
        bias: convolution bias.

    Shape:
        (B, in_channels, X, Y, Z) → (B, out_channels, ceil(X / stride), ...).
    """

    def __init__(
        self,
        num_convs: int,
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
        self.convs = repeat_blocks(
            ConvNormAct, num_convs, in_channels, out_channels, kernel_size, stride=stride, count_name="num_convs",
            spatial_dims=spatial_dims, norm=norm, act=act, bias=bias,
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)
