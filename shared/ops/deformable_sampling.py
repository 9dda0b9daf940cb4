"""The fast path of 3-D multi-scale deformable attention: one gather over all levels, chunked over queries.

Trilinear sampling is linear in the values: every output row (one query, one head) is a weighted sum of
``L·K·8`` value rows, the eight voxel corners around each sampling point, weighted by the trilinear
weight times the attention weight. This module computes those corner indices and weights for all levels
at once, gathers the value rows with one indexing and reduces them with one batched matrix product.
Queries are processed in chunks so that the gathered corners never exceed a fixed number of elements,
and the backward pass recomputes the corners chunk by chunk instead of keeping anything from the forward
pass but its inputs: memory stays bounded whatever the number of queries.

Conventions are those of :func:`shared.ops.deformable_attention.multi_scale_deformable_attention`
(``align_corners=False``, zero padding, locations ``(x, y, z)`` along the ``(X, Y, Z)`` axes).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Gathered corner elements (rows · L·K·8 · C/M) per chunk: 2**24 float32 values are 64 MiB.
DEFAULT_CHUNK_ELEMENTS = 2**24

# The eight corners of a voxel cell as 0/1 offsets along (x, y, z), x slowest.
_CORNERS = torch.tensor([[dx, dy, dz] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)], dtype=torch.int64)


def corner_indices_and_weights(
    spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor, num_values: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Flat value-row indices and trilinear weights of the eight corners around every sampling point.

    Args:
        spatial_shapes: ``(L, 3)`` int64 sizes ``(X, Y, Z)`` per level.
        level_start_index: ``(L,)`` offset of each level in the flattened values.
        sampling_locations: ``(B, Q, M, L, K, 3)`` locations in ``[0, 1]`` (outside is allowed).
        num_values: ``S``, the number of value positions per batch element.

    Returns:
        ``(index, weight, fraction, inside)``: ``index`` ``(B, Q, M, L, K, 8)`` int64 rows of the value
        viewed as ``(B·S·M, C/M)`` (corners outside the volume point at row 0 and have weight 0), ``weight``
        the trilinear weights of the same shape (zero outside), ``fraction`` ``(B, Q, M, L, K, 3)`` the
        position inside the cell and ``inside`` ``(B, Q, M, L, K, 8)`` whether the corner is in the volume,
        which the backward pass needs for the derivative.
    """
    batch, queries, heads, levels, points, _ = sampling_locations.shape
    device = sampling_locations.device
    sizes = spatial_shapes.to(device)
    # align_corners=False: location 0 is the outer face of the first voxel, voxel centres at (i + 0.5) / size.
    position = sampling_locations * sizes.view(levels, 1, 3).to(sampling_locations.dtype) - 0.5
    lower = position.floor()
    fraction = position - lower
    corner = lower.long().unsqueeze(-2) + _CORNERS.to(device)  # (B, Q, M, L, K, 8, 3)
    level_sizes = sizes.view(levels, 1, 1, 3)
    inside = ((corner >= 0) & (corner < level_sizes)).all(-1)
    corner = corner.clamp_min(0).minimum(level_sizes - 1)
    corner_fraction = torch.where(_CORNERS.to(device).bool(), fraction.unsqueeze(-2), 1 - fraction.unsqueeze(-2))
    weight = corner_fraction.prod(-1) * inside
    stride_y, stride_x = sizes[:, 2], sizes[:, 1] * sizes[:, 2]
    within_level = corner[..., 0] * stride_x.view(levels, 1, 1) + corner[..., 1] * stride_y.view(levels, 1, 1)
    position_index = within_level + corner[..., 2] + level_start_index.to(device).view(levels, 1, 1)
    position_index = position_index.masked_fill(~inside, 0)
    batch_index = torch.arange(batch, device=device).view(batch, 1, 1, 1, 1, 1)
    head_index = torch.arange(heads, device=device).view(1, 1, heads, 1, 1, 1)
    index = (batch_index * num_values + position_index) * heads + head_index
    return index, weight, fraction, inside


def _corner_weight_derivative(fraction: Tensor, inside: Tensor) -> Tensor:
    """``d weight / d fraction``: ``(B, Q, M, L, K, 8, 3)``, zero for corners outside the volume."""
    corners = _CORNERS.to(fraction.device).bool()
    factors = torch.where(corners, fraction.unsqueeze(-2), 1 - fraction.unsqueeze(-2))  # (..., 8, 3)
    signs = corners.to(fraction.dtype) * 2 - 1
    product_others = torch.stack(
        [factors[..., 1] * factors[..., 2], factors[..., 0] * factors[..., 2], factors[..., 0] * factors[..., 1]], -1
    )
    return signs * product_others * inside.unsqueeze(-1)


def _query_chunks(queries: int, heads: int, levels_points: int, channels: int, batch: int, chunk_elements: int):
    per_query = max(1, batch * heads * levels_points * 8 * channels)
    step = max(1, chunk_elements // per_query)
    return [(start, min(start + step, queries)) for start in range(0, queries, step)]


def gather_forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """The forward computation without autograd; see :class:`DeformableAttentionGatherFunction`."""
    batch, num_values, heads, channels = value.shape
    queries, levels, points = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    rows = value.reshape(batch * num_values * heads, channels)
    output = value.new_empty(batch, queries, heads, channels)
    for start, stop in _query_chunks(queries, heads, levels * points, channels, batch, chunk_elements):
        index, weight, _, _ = corner_indices_and_weights(
            spatial_shapes, level_start_index, sampling_locations[:, start:stop], num_values
        )
        weight = weight * attention_weights[:, start:stop, ..., None]
        count = batch * (stop - start) * heads
        gathered = rows[index.view(count, -1)]  # (rows, L·K·8, C/M)
        output[:, start:stop] = torch.bmm(weight.view(count, 1, -1), gathered).view(batch, stop - start, heads, channels)
    return output.view(batch, queries, heads * channels)


def gather_backward(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    needs: tuple[bool, bool, bool],
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients with respect to value, sampling locations and attention weights (``None`` where not needed)."""
    batch, num_values, heads, channels = value.shape
    queries, levels, points = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    rows = value.reshape(batch * num_values * heads, channels)
    grad_rows = torch.zeros_like(rows) if needs[0] else None
    grad_locations = torch.zeros_like(sampling_locations) if needs[1] else None
    grad_attention = torch.zeros_like(attention_weights) if needs[2] else None
    grad_output = grad_output.reshape(batch, queries, heads, channels)
    sizes = spatial_shapes.to(value.device, value.dtype).view(levels, 1, 3)
    for start, stop in _query_chunks(queries, heads, levels * points, channels, batch, chunk_elements):
        index, weight, fraction, inside = corner_indices_and_weights(
            spatial_shapes, level_start_index, sampling_locations[:, start:stop], num_values
        )
        count = batch * (stop - start) * heads
        attention = attention_weights[:, start:stop]
        grad_chunk = grad_output[:, start:stop].reshape(count, channels)
        if grad_rows is not None:
            combined = (weight * attention[..., None]).view(count, -1, 1)
            grad_rows.index_add_(0, index.view(-1), (combined * grad_chunk.unsqueeze(1)).view(-1, channels))
        if grad_locations is None and grad_attention is None:
            continue
        gathered = rows[index.view(count, -1)]
        # d output / d (corner weight): the gathered row dotted with the output's gradient.
        grad_corner = torch.bmm(gathered, grad_chunk.unsqueeze(-1)).view(weight.shape)
        if grad_attention is not None:
            grad_attention[:, start:stop] = (grad_corner * weight).sum(-1)
        if grad_locations is not None:
            derivative = _corner_weight_derivative(fraction, inside)
            grad_fraction = (grad_corner.unsqueeze(-1) * derivative).sum(-2) * attention[..., None]
            grad_locations[:, start:stop] = grad_fraction * sizes
    grad_value = None if grad_rows is None else grad_rows.view_as(value)
    return grad_value, grad_locations, grad_attention


class DeformableAttentionGatherFunction(torch.autograd.Function):
    """Differentiable gather path: saves only its inputs and recomputes the corners in the backward pass."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, chunk_elements):
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        ctx.chunk_elements = chunk_elements
        return gather_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, chunk_elements
        )

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4])
        grad_value, grad_locations, grad_attention = gather_backward(
            grad_output.contiguous(), value, spatial_shapes, level_start_index, sampling_locations,
            attention_weights, needs, ctx.chunk_elements,
        )
        return grad_value, None, None, grad_locations, grad_attention, None
