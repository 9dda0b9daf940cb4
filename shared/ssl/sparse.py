"""The sparse forward of a dense encoder, for SparK-style pre-training (the encoder sees visible voxels only).

SparK emulates sparse convolutions with dense ones: the input is masked first, and after every
convolution, normalisation, activation, pooling and residual addition the current mask is applied
again, so masked positions stay exactly zero and never leak into what the visible ones compute
(beyond the zeros a convolution reads at the border of the visible region, as at an image border).
Instance norm takes its statistics over the active voxels only, per sample and channel.

Nothing is converted or renamed: :func:`sparse_encode` walks the encoder's own modules (ResEnc or the
plain encoder) and calls their weights, so the encoder that was trained sparsely is the ordinary
dense encoder, and its state dict exports and fine-tunes like any other.

The mask is one block mask (:mod:`shared.ssl.masking`). :class:`ActiveMask` gives it at the grid of
every feature map: a level whose stride divides the block size sees the blocks exactly (each block
covers ``block / stride`` voxels per axis); a level coarser than the mask grid mixes visible and
hidden blocks in one voxel and is all active.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shared.layers.blocks import ConvNormAct, StackedConvBlocks
from shared.layers.residual import BasicResidualBlock, StackedResidualBlocks
from shared.ssl.masking import as_triple

# Activations act voxel by voxel, so re-masking after them is all a sparse form needs.
ELEMENTWISE_ACTIVATIONS = (
    nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Softplus,
)
POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


class ActiveMask:
    """Which voxels are active (visible), at the input grid and at every coarser feature grid.

    Args:
        active: True where a voxel is visible, aligned to blocks of ``block_size``.
        block_size: the mask's block edge in voxels, one int or one per axis.

    Shape:
        active: (B, 1, X, Y, Z); :meth:`at` returns (B, 1, x, y, z) for a feature grid (x, y, z).
    """

    def __init__(self, active: torch.Tensor, block_size: int | Sequence[int]):
        if active.ndim != 5 or active.shape[1] != 1:
            raise ValueError(f"active mask: expected (B, 1, X, Y, Z), got shape {tuple(active.shape)}")
        self.active = active.to(torch.bool)
        self.block_size = as_triple(block_size, "block_size")
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}

    @classmethod
    def from_hidden(cls, hidden: torch.Tensor, block_size: int | Sequence[int]) -> ActiveMask:
        """The active mask of a hidden-voxel mask (True where masked, as :func:`block_mask` draws it)."""
        return cls(~hidden.to(torch.bool), block_size)

    def at(self, spatial_shape: Sequence[int]) -> torch.Tensor:
        """The mask at a feature grid whose size divides the input's on every axis.

        Args:
            spatial_shape: the feature map's (x, y, z).

        Returns:
            Boolean (B, 1, x, y, z), True where active.
        """
        shape = tuple(int(s) for s in spatial_shape)
        if shape not in self._cache:
            self._cache[shape] = self._downsample(shape)
        return self._cache[shape]

    def _downsample(self, shape: tuple[int, ...]) -> torch.Tensor:
        full = tuple(self.active.shape[2:])
        if len(shape) != 3 or any(n % s for n, s in zip(full, shape)):
            raise ValueError(f"feature grid {shape} does not divide the masked input grid {full}")
        strides = [n // s for n, s in zip(full, shape)]
        if all(block % stride == 0 for block, stride in zip(self.block_size, strides)):
            return self.active[:, :, :: strides[0], :: strides[1], :: strides[2]]
        if all(block % stride == 0 or stride % block == 0 for block, stride in zip(self.block_size, strides)):
            return torch.ones((self.active.shape[0], 1, *shape), dtype=torch.bool, device=self.active.device)
        raise ValueError(
            f"a feature stride {tuple(strides)} neither divides nor is a multiple of the mask block size "
            f"{self.block_size}: choose a block size that is a multiple of the encoder's strides"
        )


def sparse_instance_norm(
    x: torch.Tensor,
    active: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Instance norm whose mean and (biased) variance are taken over the active voxels only.

    Args:
        x: features; inactive voxels may hold anything, they are ignored and returned as zero.
        active: True where a voxel is active.
        weight: per-channel scale (the affine norm's), or ``None``.
        bias: per-channel shift, or ``None``.
        eps: added to the variance, as in ``nn.InstanceNorm3d``.

    Returns:
        The normalised features, zero where inactive.

    Shape:
        x: (B, C, X, Y, Z); active: (B, 1, X, Y, Z); output: like x.
    """
    keep = active.to(x.dtype)
    spatial = tuple(range(2, x.ndim))
    count = keep.sum(dim=spatial, keepdim=True).clamp_min(1.0)
    mean = (x * keep).sum(dim=spatial, keepdim=True) / count
    centred = (x - mean) * keep
    variance = (centred * centred).sum(dim=spatial, keepdim=True) / count
    y = centred * torch.rsqrt(variance + eps)
    view = (1, -1) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.view(view)
    if bias is not None:
        y = y + bias.view(view)
    return y * keep


def _masked(x: torch.Tensor, mask: ActiveMask) -> torch.Tensor:
    return x * mask.at(x.shape[2:]).to(x.dtype)


def _sparse_norm(norm: nn.Module, x: torch.Tensor, mask: ActiveMask) -> torch.Tensor:
    if not isinstance(norm, nn.modules.instancenorm._InstanceNorm) or norm.track_running_stats:
        raise TypeError(
            f"no sparse form for the normalisation {norm!r}: SparK needs instance norm without running "
            "statistics (norm=('instance', {'affine': True}))"
        )
    return sparse_instance_norm(x, mask.at(x.shape[2:]), weight=norm.weight, bias=norm.bias, eps=norm.eps)


def sparse_forward(module: nn.Module, x: torch.Tensor, mask: ActiveMask) -> torch.Tensor:
    """Runs one encoder module sparsely: its own layers, with the mask re-applied after each.

    Args:
        module: a layer or block of the project's encoders (conv, instance norm, activation,
            pooling, ``ConvNormAct``, stacked and residual blocks, ``nn.Sequential`` of those).
        x: features, zero where inactive.
        mask: the active mask at every grid.

    Returns:
        The module's output, zero where inactive.

    Raises:
        TypeError: a module without a sparse form (e.g. batch norm, attention).

    Shape:
        x: (B, C, X, Y, Z) → (B, C', X', Y', Z').
    """
    if isinstance(module, ConvNormAct):
        x = _masked(module.conv(x), mask)
        if module.norm is not None:
            x = _sparse_norm(module.norm, x, mask)
        return x if module.nonlin is None else _masked(module.nonlin(x), mask)
    if isinstance(module, BasicResidualBlock):
        main = sparse_forward(module.conv2, sparse_forward(module.conv1, x, mask), mask)
        return sparse_forward(module.nonlin2, _masked(main + sparse_forward(module.skip, x, mask), mask), mask)
    if isinstance(module, StackedConvBlocks):
        return sparse_forward(module.convs, x, mask)
    if isinstance(module, StackedResidualBlocks):
        return sparse_forward(module.blocks, x, mask)
    if isinstance(module, nn.Sequential):
        for layer in module:
            x = sparse_forward(layer, x, mask)
        return x
    if isinstance(module, nn.Identity):
        return x
    if isinstance(module, nn.modules.conv._ConvNd) or isinstance(module, ELEMENTWISE_ACTIVATIONS + POOLS):
        return _masked(module(x), mask)
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return _sparse_norm(module, x, mask)
    raise TypeError(f"no sparse form for {type(module).__name__}: sparse_forward knows convs, instance norms, "
                    "element-wise activations, pooling and the project's conv and residual blocks")


def sparse_encode(encoder: nn.Module, images: torch.Tensor, mask: ActiveMask) -> list[torch.Tensor]:
    """The encoder's feature maps computed from the active voxels alone.

    Args:
        encoder: a project encoder with ``stages`` (and ``stem`` for ResEnc), e.g. ``ResidualEncoder``.
        images: the input; hidden voxels are zeroed here, whatever they hold.
        mask: the active mask (:class:`ActiveMask`) of this batch.

    Returns:
        One feature map per stage, fine → coarse, each zero where inactive at its grid.

    Shape:
        images: (B, C, X, Y, Z); output: as the encoder's dense forward.
    """
    if hasattr(encoder, "check_input"):
        encoder.check_input(images)
    x = _masked(images, mask)
    stem = getattr(encoder, "stem", None)
    if stem is not None:
        x = sparse_forward(stem, x, mask)
    features = []
    for stage in encoder.stages:
        x = sparse_forward(stage, x, mask)
        features.append(x)
    return features
