"""Sine position encodings of 3-D feature maps and of normalised boxes (Deformable DETR's, in 3-D).

One function encodes coordinates in ``[0, 1]``: each coordinate ``t`` becomes ``F`` features
``sin(2π t / T^(2i/F)), cos(2π t / T^(2i/F))`` for ``i = 0 … F/2 - 1`` (``T`` the temperature). A feature
map's encoding applies it to the voxel centres ``(i + 0.5) / n`` of each axis, splitting the channels
over the three axes as evenly as even counts allow (128 → 44, 42, 42); a box's encoding applies it to its
six normalised values ``(cx, cy, cz, w, h, d)`` (the two-stage queries' position embedding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def sine_coordinate_embedding(
    coordinates: Tensor, features_per_coordinate: int, *, temperature: float = 10000.0
) -> Tensor:
    """Sine/cosine features of coordinates in ``[0, 1]``, concatenated coordinate by coordinate.

    Args:
        coordinates: values in ``[0, 1]`` (a normalised position or box), last axis ``D`` coordinates.
        features_per_coordinate: ``F`` (even): features per coordinate, alternately sine and cosine.
        temperature: ``T``, the longest wavelength.

    Returns:
        The embedding, coordinate 0's ``F`` features first.

    Shape:
        coordinates ``(..., D)`` → ``(..., D·F)``.
    """
    if features_per_coordinate < 2 or features_per_coordinate % 2:
        raise ValueError(f"features_per_coordinate must be even and positive, got {features_per_coordinate}")
    half = torch.arange(features_per_coordinate // 2, dtype=torch.float32, device=coordinates.device)
    frequencies = temperature ** (-2.0 * half / features_per_coordinate)  # (F/2,)
    angles = coordinates.float()[..., None] * (2 * math.pi) * frequencies  # (..., D, F/2)
    features = torch.stack([angles.sin(), angles.cos()], dim=-1)  # (..., D, F/2, 2): sine, cosine interleaved
    return features.flatten(-3).to(coordinates.dtype if coordinates.is_floating_point() else torch.float32)


def axis_channels(channels: int, spatial_dims: int = 3) -> list[int]:
    """Channels of each axis in a feature map's encoding: even counts summing to ``channels``, the first
    axes taking the remainder (128 → [44, 42, 42])."""
    if channels % 2 or channels < 2 * spatial_dims:
        raise ValueError(f"a sine position encoding needs an even number of channels ≥ {2 * spatial_dims}, "
                         f"got {channels}")
    pairs, extra = divmod(channels // 2, spatial_dims)
    return [2 * (pairs + (axis < extra)) for axis in range(spatial_dims)]


def sine_position_encoding(
    spatial_shape: Sequence[int], channels: int, *, temperature: float = 10000.0, device: torch.device | None = None
) -> Tensor:
    """The encoding of every voxel of a feature map from its normalised centre ``(i + 0.5) / n`` per axis.

    Args:
        spatial_shape: ``(X, Y, Z)`` of the map.
        channels: ``C`` (even), split over the axes by :func:`axis_channels`.
        temperature: as in :func:`sine_coordinate_embedding`.
        device: where to build it.

    Returns:
        The encoding, the channels of x, then y, then z.

    Shape:
        ``(C, X, Y, Z)``.
    """
    spatial_shape = [int(size) for size in spatial_shape]
    centres = [(torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size for size in spatial_shape]
    grids = torch.meshgrid(*centres, indexing="ij")
    parts = [sine_coordinate_embedding(grid[..., None], width, temperature=temperature)
             for grid, width in zip(grids, axis_channels(channels, len(spatial_shape)))]
    return torch.cat(parts, dim=-1).movedim(-1, 0).contiguous()
