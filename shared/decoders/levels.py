"""Reading an encoder's ``feature_info``: channels, cumulative strides and the ratio between levels.

Strides follow :mod:`shared.layers.strides`: an int when equal on every axis, else one int per axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.layers.strides import compact, per_axis


def read_levels(
    feature_info: Sequence[dict], spatial_dims: int = 3
) -> tuple[list[int], list[int | tuple[int, ...]], list[int | tuple[int, ...]]]:
    """Checks ``feature_info`` and returns channels, cumulative strides and level-to-level ratios.

    Args:
        feature_info: ``[{"channels": c, "stride": s}, ...]`` fine → coarse; ``s`` an int or one
            int per axis.
        spatial_dims: number of spatial axes.

    Returns:
        ``(channels, strides, ratios)`` with ``ratios[l] = strides[l + 1] / strides[l]`` per axis
        (one fewer entry than levels); strides and ratios in compact form (int when isotropic).

    Raises:
        ValueError: empty, missing keys, or strides that do not grow by integer factors on every axis.
    """
    if not feature_info:
        raise ValueError("feature_info is empty: a decoder needs at least one encoder level")
    try:
        channels = [int(level["channels"]) for level in feature_info]
        axis_strides = [per_axis(level["stride"], spatial_dims, "feature_info stride") for level in feature_info]
    except (KeyError, TypeError) as error:
        raise ValueError(f"feature_info entries need 'channels' and 'stride', got {list(feature_info)}") from error
    strides = [compact(s) for s in axis_strides]
    ratios = []
    for finer, coarser in zip(axis_strides, axis_strides[1:]):
        if any(c % f for f, c in zip(finer, coarser)):
            raise ValueError(f"feature_info strides must grow by integer factors on every axis, got {strides}")
        ratios.append(compact([c // f for f, c in zip(finer, coarser)]))
    return channels, strides, ratios


def find_level(strides: Sequence[Any], wanted: Any, spatial_dims: int = 3, argument: str = "detection stride") -> int:
    """The index of the level with cumulative stride ``wanted``.

    A per-axis ``wanted`` must equal a level's stride (the finest such level when a stride repeats).
    An int ``s`` names the level whose stride is ``s`` on every axis or, on an anisotropic encoder,
    the one level whose coarsest axis has stride ``s`` — so ``detection_strides = [4, 8, 16, 32]`` picks the same depth of the network in the
    isotropic and in the planned anisotropic arm (where the in-plane axes keep the isotropic strides).

    Raises:
        ValueError: naming ``argument``, when no level or more than one level matches.
    """
    levels = [per_axis(s, spatial_dims, "stride") for s in strides]
    target = per_axis(wanted, spatial_dims, argument)
    matches = [i for i, level in enumerate(levels) if level == target][:1]  # a repeated stride: the finest
    if not matches and isinstance(wanted, int):
        matches = [i for i, level in enumerate(levels) if max(level) == wanted]
    if not matches:
        raise ValueError(f"{argument} {wanted!r} is not an encoder stride; encoder strides are {list(strides)}")
    if len(matches) > 1:
        raise ValueError(f"{argument} {wanted!r} matches levels {matches} of the encoder strides {list(strides)}; "
                         f"give the level's stride per axis")
    return matches[0]
