"""What every encoder declares: its input channels, its levels (``feature_info``) and its stem keys."""

from __future__ import annotations

import torch
from torch import nn

from shared.layers.strides import cumulative_strides, per_axis


class Encoder(nn.Module):
    """Base of the project's encoders: ``forward(x) -> list`` of feature maps, fine → coarse.

    Subclasses set ``in_channels``, ``stem_keys`` and ``stages`` (an ``nn.Sequential``, one module per
    level) and call :meth:`_declare_levels`.

    Attributes:
        in_channels: channels the input must have.
        spatial_dims: number of spatial axes (3 for volumes).
        feature_info: one ``{"channels": c, "stride": s}`` per level, fine → coarse; ``s`` is the
            cumulative stride with respect to the input: an int when equal on every axis, else a
            tuple with one int per axis (:mod:`shared.layers.strides`).
        stem_keys: state-dict key prefixes of the layers that read the input channels, so that
            pre-trained weights can skip, replicate or swap the stem for another channel count.
    """

    in_channels: int
    spatial_dims: int
    stem_keys: tuple[str, ...]
    feature_info: list[dict[str, int | tuple[int, ...]]]

    def _declare_levels(self, channels: list[int], strides: list[int | tuple[int, ...]]) -> None:
        totals = cumulative_strides(strides, self.spatial_dims)
        self.feature_info = [{"channels": int(width), "stride": total} for width, total in zip(channels, totals)]

    def check_input(self, x: torch.Tensor) -> None:
        """Raises ``ValueError`` unless ``x`` is (B, in_channels, X, Y, Z) with a matching rank."""
        spatial_dims = self.spatial_dims
        if x.ndim != spatial_dims + 2:
            raise ValueError(
                f"{type(self).__name__} expects a ({'B, C, ' + ', '.join('XYZ'[:spatial_dims])}) tensor, "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_channels} input channel(s) but the input has "
                f"{x.shape[1]} (shape {tuple(x.shape)}); build it with in_channels={x.shape[1]} or fix the data"
            )

    def _run_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run ``self.stages`` in turn and keep every stage's output, fine → coarse."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    @property
    def strides(self) -> list[int | tuple[int, ...]]:
        """Cumulative stride per level, fine → coarse (an int, or one per axis when they differ)."""
        return [level["stride"] for level in self.feature_info]

    @property
    def channels(self) -> list[int]:
        """Channels per level, fine → coarse."""
        return [level["channels"] for level in self.feature_info]


def check_divisible(x: torch.Tensor, stride: int | tuple[int, ...], owner: str) -> None:
    """Raises ``ValueError`` unless every spatial size of ``x`` is a multiple of ``stride`` on its axis.

    Decoders that upsample and add/concatenate need exact sizes at every level.

    Args:
        x: (B, C, X, Y, Z) input.
        stride: the coarsest cumulative stride of the network (an int, or one per axis).
        owner: the network's name, for the message.
    """
    sizes = tuple(x.shape[2:])
    axis_strides = per_axis(stride, len(sizes), "stride")
    if any(size % s for size, s in zip(sizes, axis_strides)):
        raise ValueError(
            f"{owner} needs spatial sizes divisible by its coarsest stride {stride}, got {sizes}; "
            f"pad or crop the input (e.g. to {tuple(-(-n // s) * s for n, s in zip(sizes, axis_strides))})"
        )
