"""Per-axis strides and kernel sizes: one reading of "a scalar or one value per axis".

Anisotropic data (e.g. 0.8 × 0.8 × 2.5 mm) needs stages that pool and convolve some axes only, as
nnU-Net / nnDetection plan them and dynamic-network-architectures builds them. The convention, used
by encoders, decoders, heads and anchors alike: a stride or kernel is an ``int`` when it is equal on
every axis and a tuple of one ``int`` per spatial axis otherwise (:func:`compact`). Isotropic
configurations therefore look, build and save exactly as before; :func:`per_axis` reads either form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.layers.specs import per_stage


def per_axis(value: Any, spatial_dims: int, argument: str) -> tuple[int, ...]:
    """One positive int per spatial axis from an int or a per-axis sequence.

    Args:
        value: an int (broadcast to every axis) or a sequence of ``spatial_dims`` ints.
        spatial_dims: number of spatial axes.
        argument: the argument's name, for the error message.

    Raises:
        ValueError: naming ``argument``, for a non-integer, a value below 1 or a wrong axis count.
    """
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * spatial_dims
    if len(values) != spatial_dims or any(isinstance(v, bool) or not _is_integer(v) or int(v) < 1 for v in values):
        raise ValueError(
            f"{argument}: expected a positive integer or {spatial_dims} positive integers (one per axis), got {value!r}"
        )
    return tuple(int(v) for v in values)


def compact(values: Sequence[int]) -> int | tuple[int, ...]:
    """``(2, 2, 2) → 2``; ``(2, 2, 1) → (2, 2, 1)``: an int when equal on every axis."""
    values = tuple(int(v) for v in values)
    return values[0] if len(set(values)) == 1 else values


def per_stage_per_axis(value: Any, num_stages: int, spatial_dims: int, argument: str) -> list[int | tuple[int, ...]]:
    """Per-stage values, each an int or a per-axis list, checked and compacted.

    Args:
        value: an int for every stage, or one entry per stage, each an int or ``spatial_dims`` ints
            (``[1, [2, 2, 1], 2]``).
        num_stages: number of stages.
        spatial_dims: number of spatial axes.
        argument: the argument's name, for the error messages.

    Returns:
        ``num_stages`` entries in :func:`compact` form.

    Raises:
        ValueError: naming ``argument``, for a wrong stage count or a bad entry (with its stage).
    """
    stages = per_stage(value, num_stages, argument)
    return [compact(per_axis(entry, spatial_dims, f"{argument}[{stage}]")) for stage, entry in enumerate(stages)]


def cumulative_strides(strides: Sequence[Any], spatial_dims: int) -> list[int | tuple[int, ...]]:
    """Cumulative per-axis products of per-stage strides, in :func:`compact` form."""
    total, result = (1,) * spatial_dims, []
    for stage, stride in enumerate(strides):
        total = tuple(a * b for a, b in zip(total, per_axis(stride, spatial_dims, f"strides[{stage}]")))
        result.append(compact(total))
    return result


def _is_integer(value: Any) -> bool:
    try:
        return int(value) == value
    except (TypeError, ValueError):
        return False
