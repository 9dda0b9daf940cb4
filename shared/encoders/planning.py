"""Per-axis strides and kernel sizes planned from the voxel spacing (nnU-Net / nnDetection style).

The paper's "default" spacing arm trains at the data set's median spacing, which is anisotropic for
most CT and MRI (e.g. 0.8 × 0.8 × 2.5 mm). nnU-Net's planner (``get_pool_and_conv_props``, which
nnDetection reuses) then pools an axis only while its spacing is below twice the finest pooled
spacing and it keeps at least ``2 × min_feature_map_size`` voxels, and convolves with a 1-voxel kernel
along an axis until its spacing comes within a factor 2 of the finest; the coarsest stage always uses
3-voxel kernels. We keep the encoder's number of stages (the preset's) and plan each stage's stride
and kernel with those rules, so an isotropic spacing gives back the presets' ``[1, 2, 2, …]`` and 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.layers.strides import compact, per_axis

# nnU-Net v1 / nnDetection: an axis is pooled only while at least twice this many voxels remain.
MIN_FEATURE_MAP_SIZE = 4
# An axis counts as "as fine as the finest" below this spacing ratio.
ANISOTROPY_RATIO = 2.0


def plan_strides_and_kernels(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    num_stages: int,
    *,
    min_feature_map_size: int = MIN_FEATURE_MAP_SIZE,
) -> tuple[list[int | tuple[int, ...]], list[int | tuple[int, ...]]]:
    """Per-stage strides and kernel sizes of an encoder for a spacing and patch size.

    Stage 0 has stride 1 (it sees the input resolution, as the presets' first stage); every later
    stage pools by 2 the axes that are both fine enough (spacing < 2 × the finest spacing among the
    axes large enough to pool) and large enough (≥ ``2 · min_feature_map_size`` voxels; a lone such
    axis needs ``3 · min_feature_map_size``, as in nnU-Net). A stage's kernel is 3 along the axes whose
    spacing at that stage is within a factor 2 of the finest, 1 along the others (once 3, it stays 3);
    the last stage's kernel is 3 on every axis.

    Args:
        spacing: voxel spacing in mm, one value per axis (the array's axis order).
        patch_size: training patch in voxels, one value per axis.
        num_stages: the encoder's number of stages (``len(features)``).
        min_feature_map_size: smallest size an axis may be pooled down to.

    Returns:
        ``(strides, kernel_sizes)``: one entry per stage, each an int when equal on every axis, else
        a per-axis tuple (``shared.layers.strides.compact``), ready for the encoders.

    Raises:
        ValueError: naming the patch size and spacing, when the patch is too small for
            ``num_stages`` poolings.
    """
    requested, spacing = [float(s) for s in spacing], [float(s) for s in spacing]
    sizes = [float(n) for n in patch_size]
    if len(spacing) != len(sizes) or min(spacing) <= 0 or min(sizes) < 1 or num_stages < 1:
        raise ValueError(f"plan needs positive spacing and patch_size of equal length and num_stages >= 1, got "
                         f"spacing {spacing}, patch_size {list(patch_size)}, num_stages {num_stages}")
    dims = len(spacing)
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernel = [1] * dims
    kernels: list[tuple[int, ...]] = []
    for stage in range(num_stages):
        if stage:
            axes = _axes_to_pool(spacing, sizes, min_feature_map_size)
            if not axes:
                raise ValueError(
                    f"patch_size {list(patch_size)} at spacing {[round(s, 4) for s in requested]} "
                    f"allows only {stage - 1} poolings but the encoder has {num_stages} stages: enlarge the patch "
                    f"or use an encoder with fewer stages"
                )
            strides.append(tuple(2 if axis in axes else 1 for axis in range(dims)))
            for axis in axes:
                spacing[axis] *= 2
                sizes[axis] /= 2
        finest = min(spacing)
        kernel = [3 if k == 3 or s / finest < ANISOTROPY_RATIO else 1 for k, s in zip(kernel, spacing)]
        kernels.append(tuple(kernel))
    kernels[-1] = (3,) * dims
    return [compact(s) for s in strides], [compact(k) for k in kernels]


def _axes_to_pool(spacing: list[float], sizes: list[float], min_feature_map_size: int) -> list[int]:
    large = [axis for axis in range(len(sizes)) if sizes[axis] >= 2 * min_feature_map_size]
    if not large:
        return []
    finest = min(spacing[axis] for axis in large)
    axes = [axis for axis in large if spacing[axis] / finest < ANISOTROPY_RATIO]
    if len(axes) == 1 and sizes[axes[0]] < 3 * min_feature_map_size:
        return []
    return axes


def is_spacing_variant(first: Sequence[Any], second: Sequence[Any], spatial_dims: int = 3) -> bool:
    """Whether two per-stage stride lists are one encoder planned for two spacings (the paper's arms).

    True when, in one direction, every stage pools the same axes or a subset of them that still
    pools (e.g. ``[1, 2, 2]`` and ``[1, [2, 2, 1], 2]``): the weights of such encoders are
    interchangeable wherever the kernels have the same shape. Strides leave no trace in weight
    shapes, so this is what lets weights cross between the arms while other stride changes are refused.
    """
    if len(first) != len(second):
        return False
    return _pools_a_subset(first, second, spatial_dims) or _pools_a_subset(second, first, spatial_dims)


def _pools_a_subset(full: Sequence[Any], reduced: Sequence[Any], spatial_dims: int) -> bool:
    for full_stage, reduced_stage in zip(full, reduced):
        full_axes = per_axis(full_stage, spatial_dims, "strides")
        reduced_axes = per_axis(reduced_stage, spatial_dims, "strides")
        if any(r not in (f, 1) for f, r in zip(full_axes, reduced_axes)):
            return False
        if max(full_axes) > 1 and not any(r == f > 1 for f, r in zip(full_axes, reduced_axes)):
            return False
    return True
