"""3-D multi-scale deformable attention (Deformable DETR's core op, extended to volumes).

Every query attends, in each of ``M`` heads, to ``K`` points on each of ``L`` feature levels: the value
is sampled trilinearly at the points and summed with the query's attention weights. Two implementations
with one signature:

* ``"reference"``: pure PyTorch, one 5-D trilinear :func:`torch.nn.functional.grid_sample` per level
  (``align_corners=False``, zero padding), as Deformable-DETR's ``ms_deform_attn_core_pytorch`` does in 2-D.
  Simple and always available; it keeps a ``(B·M, C/M, Q, K)`` sampled tensor per level for autograd.
* ``"fast"``: :mod:`shared.ops.deformable_sampling`, chunked over queries, trilinear sampling as two
  bilinear samples through ATen's vectorised 2-D kernels, with its own backward pass that keeps only the
  inputs. Faster and leaner on CPU; see ``docs/deformable_attention.md`` for the measurements.

``"auto"`` picks the fast path from ``AUTO_FAST_MIN_POINTS`` sampling points ``B·Q·M·L·K`` on (the encoder
at realistic sizes) and the reference below (a decoder's few hundred queries, small patches), where the
reference is as fast and its memory small.

Conventions: a level's volume is ``(X, Y, Z)`` (the project's ``(B, C, X, Y, Z)`` tensors), flattened
with ``z`` fastest, the levels concatenated fine to coarse at ``level_start_index``. Locations are
``(x, y, z)`` in ``[0, 1]`` along those axes, 0 and 1 being the outer faces of the first and last voxel,
so voxel ``i`` of a level of size ``n`` has its centre at ``(i + 0.5) / n``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from shared.ops.deformable_sampling import DEFAULT_CHUNK_ELEMENTS, ChunkedDeformableAttentionFunction

IMPLEMENTATIONS = ("reference", "fast", "auto")
#: ``"auto"`` takes the fast path from this many sampling points ``B·Q·M·L·K`` on (the encoder of a 128³
#: patch has 4.8 million, a decoder's 300 queries 38,400).
AUTO_FAST_MIN_POINTS = 2**19


def _check_shapes(
    value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor,
    attention_weights: Tensor,
) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be (B, S, M, C/M), got shape {tuple(value.shape)}")
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 3:
        raise ValueError(f"spatial_shapes must be (L, 3) sizes (X, Y, Z), got shape {tuple(spatial_shapes.shape)}")
    levels = spatial_shapes.shape[0]
    if level_start_index.shape != (levels,):
        raise ValueError(f"level_start_index must be ({levels},), got shape {tuple(level_start_index.shape)}")
    batch, num_values, heads, _ = value.shape
    starts = torch.cat([spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]])
    if not torch.equal(level_start_index.cpu(), starts.cpu()):
        raise ValueError(f"level_start_index must be {starts.tolist()} (the levels one after the other in the "
                         f"order of spatial_shapes), got {level_start_index.tolist()}")
    if int(spatial_shapes.prod(1).sum()) != num_values:
        raise ValueError(f"spatial_shapes {spatial_shapes.tolist()} cover {int(spatial_shapes.prod(1).sum())} "
                         f"positions but value has S={num_values}")
    expected = (batch, sampling_locations.shape[1], heads, levels)
    if sampling_locations.dim() != 6 or sampling_locations.shape[:4] != expected or sampling_locations.shape[5] != 3:
        raise ValueError(f"sampling_locations must be (B, Q, M, L, K, 3) with B, M, L = {batch}, {heads}, {levels}, "
                         f"got shape {tuple(sampling_locations.shape)}")
    if attention_weights.shape != sampling_locations.shape[:5]:
        raise ValueError(f"attention_weights must be (B, Q, M, L, K) = {tuple(sampling_locations.shape[:5])}, "
                         f"got shape {tuple(attention_weights.shape)}")


def reference_deformable_attention(
    value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The pure-PyTorch reference: trilinear ``grid_sample`` per level. Arguments as for
    :func:`multi_scale_deformable_attention`."""
    batch, _, heads, channels = value.shape
    queries, levels, points = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    # grid_sample reads the grid's last axis as (W, H, D) of an (N, C, D, H, W) input: our (X, Y, Z)
    # volume is (D, H, W) = (X, Y, Z), so the locations (x, y, z) enter reversed.
    grids = 2 * sampling_locations.flip(-1) - 1
    sampled = []
    for level, (size_x, size_y, size_z) in enumerate(spatial_shapes.tolist()):
        start = int(level_start_index[level])
        level_value = value[:, start:start + size_x * size_y * size_z]  # (B, XYZ, M, C/M)
        level_value = level_value.permute(0, 2, 3, 1).reshape(batch * heads, channels, size_x, size_y, size_z)
        grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries, points, 1, 3)
        level_sampled = F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled.append(level_sampled.squeeze(-1))  # (B·M, C/M, Q, K)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (B·M, C/M, Q)
    return output.view(batch, heads * channels, queries).transpose(1, 2).contiguous()


def multi_scale_deformable_attention(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    *,
    implementation: str = "auto",
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """Multi-scale deformable attention over ``L`` 3-D levels, differentiable in value, locations and weights.

    Args:
        value: the projected values of all levels, split into heads.
        spatial_shapes: int64 sizes ``(X, Y, Z)`` of each level.
        level_start_index: where each level starts in ``S`` (``0, X0·Y0·Z0, ...``).
        sampling_locations: ``(x, y, z)`` in ``[0, 1]`` per query, head, level and point, along the
            ``spatial_shapes`` axes (``align_corners=False``); points outside read zeros.
        attention_weights: per query, head, level and point, already normalised (softmax over ``L·K``).
        implementation: ``"reference"`` (3-D ``grid_sample`` per level), ``"fast"`` (chunked, 2-D kernels)
            or ``"auto"`` (the fast one from ``AUTO_FAST_MIN_POINTS`` sampling points on).
        chunk_elements: for the fast path, the most sampled numbers held at once (its memory bound).

    Returns:
        The attended values, heads concatenated.

    Shape:
        - value: ``(B, S, M, C/M)`` with ``S = sum(X·Y·Z)`` over levels
        - spatial_shapes: ``(L, 3)``; level_start_index: ``(L,)``
        - sampling_locations: ``(B, Q, M, L, K, 3)``; attention_weights: ``(B, Q, M, L, K)``
        - output: ``(B, Q, M·C/M)``
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    _check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if implementation == "auto":
        # The fast path saves time per sampled point but costs more small operations and a few copies of
        # the value: measured on CPU it wins from about half a million points (docs/deformable_attention.md),
        # where the reference's memory starts to count too.
        # A trace (TorchScript export) cannot hold the fast path's Python autograd function.
        fast = attention_weights.numel() >= AUTO_FAST_MIN_POINTS and not torch.jit.is_tracing()
        implementation = "fast" if fast else "reference"
    if implementation == "reference":
        return reference_deformable_attention(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    # The fast path addresses a level as an image Y·(Z + 1) columns wide: half precision would put its
    # samples a voxel off at 32³, so it computes in float32 and returns the input's precision.
    compute_dtype = torch.float32 if value.dtype in (torch.float16, torch.bfloat16) else value.dtype
    output = ChunkedDeformableAttentionFunction.apply(
        value.to(compute_dtype).contiguous(), spatial_shapes, level_start_index,
        sampling_locations.to(compute_dtype).contiguous(), attention_weights.to(compute_dtype).contiguous(),
        chunk_elements,
    )
    return output.to(value.dtype)
