"""The fast path of 3-D multi-scale deformable attention: chunked over queries, nothing kept for backward.

The reference keeps, for autograd, a ``(B·M, C/M, Q, K)`` sampled tensor per level, their stack and its
product with the attention weights: about ``3·B·Q·M·L·K·C/M`` numbers, over a gigabyte at the encoder's
37,440 queries. This path samples with the same fused ATen kernels (``grid_sampler_3d`` and its backward)
but query chunk by query chunk, adds each level's weighted samples straight into the output, and keeps
only its inputs for the backward pass, which samples again chunk by chunk: memory stays bounded by
``chunk_elements`` whatever the number of queries, and the forward pass skips the stack and its copy.

A gather formulation (the eight corner indices and weights of every point into the flattened value,
reduced by a sparse CSR product, sampled matmul and ``index_add_`` in the backward pass) measured 2x
slower forward and 2x slower backward on CPU than these fused kernels: computing the corner tensors costs
more than the sampling itself. See ``docs/deformable_attention.md``.

Conventions are those of :func:`shared.ops.deformable_attention.multi_scale_deformable_attention`
(``align_corners=False``, zero padding, locations ``(x, y, z)`` along the ``(X, Y, Z)`` axes, the levels
stored one after the other in ``value`` in the order of ``spatial_shapes``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Sampled numbers (B·M · C/M · chunk queries · L·K) per chunk: 2**24 float32 values are 64 MiB.
DEFAULT_CHUNK_ELEMENTS = 2**24


def _query_chunks(value: Tensor, sampling_locations: Tensor, chunk_elements: int) -> list[tuple[int, int]]:
    """``[start, stop)`` query ranges whose sampled tensors hold at most ``chunk_elements`` numbers."""
    batch, queries, heads, levels, points, _ = sampling_locations.shape
    step = max(1, chunk_elements // max(1, batch * heads * value.shape[3] * levels * points))
    return [(start, min(start + step, queries)) for start in range(0, queries, step)]


def _level_volumes(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor) -> list[Tensor]:
    """Each level of ``value`` ``(B, S, M, C/M)`` as a ``(B·M, C/M, X, Y, Z)`` volume for ``grid_sample``."""
    batch, _, heads, channels = value.shape
    volumes = []
    for level, (size_x, size_y, size_z) in enumerate(spatial_shapes.tolist()):
        start = int(level_start_index[level])
        level_value = value[:, start:start + size_x * size_y * size_z].permute(0, 2, 3, 1)
        volumes.append(level_value.reshape(batch * heads, channels, size_x, size_y, size_z))
    return volumes


def _level_grids(sampling_locations: Tensor) -> Tensor:
    """``(B, Q, M, L, K, 3)`` locations to ``grid_sample`` grids ``(L, B·M, Q, K, 1, 3)``, reversed to (z, y, x)."""
    batch, queries, heads, levels, points, _ = sampling_locations.shape
    grids = (2 * sampling_locations.flip(-1) - 1).permute(3, 0, 2, 1, 4, 5)
    return grids.reshape(levels, batch * heads, queries, points, 1, 3)


def _level_attention(attention_weights: Tensor) -> Tensor:
    """``(B, Q, M, L, K)`` weights to ``(L, B, M, 1, Q, K)``, broadcasting over the channels of a head."""
    return attention_weights.permute(3, 0, 2, 1, 4).unsqueeze(3).contiguous()


def chunked_forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """Forward through ATen's fused trilinear sampling, chunk by chunk, accumulating the levels in place."""
    batch, _, heads, channels = value.shape
    queries, points = sampling_locations.shape[1], sampling_locations.shape[4]
    volumes = _level_volumes(value, spatial_shapes, level_start_index)
    output = value.new_zeros(batch, heads, channels, queries)
    for start, stop in _query_chunks(value, sampling_locations, chunk_elements):
        count = stop - start
        grids = _level_grids(sampling_locations[:, start:stop])
        attention = _level_attention(attention_weights[:, start:stop])
        for level, volume in enumerate(volumes):
            sampled = F.grid_sample(volume, grids[level], mode="bilinear", padding_mode="zeros",
                                    align_corners=False)  # (B·M, C/M, Qc, K, 1)
            output[..., start:stop] += (sampled.view(batch, heads, channels, count, points) * attention[level]).sum(-1)
    return output.permute(0, 3, 1, 2).reshape(batch, queries, heads * channels).contiguous()


def chunked_backward(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    needs: tuple[bool, bool, bool],
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients with respect to value, sampling locations and attention weights (``None`` where ``needs``
    says not needed), through ATen's fused trilinear sampling backward, level by level and chunk by chunk."""
    batch, _, heads, channels = value.shape
    queries, points = sampling_locations.shape[1], sampling_locations.shape[4]
    volumes = _level_volumes(value, spatial_shapes, level_start_index)
    grad_volumes = [torch.zeros_like(volume) for volume in volumes] if needs[0] else None
    grad_locations = torch.zeros_like(sampling_locations) if needs[1] else None
    grad_attention = torch.zeros_like(attention_weights) if needs[2] else None
    grad_heads = grad_output.reshape(batch, queries, heads, channels).permute(0, 2, 3, 1)  # (B, M, C/M, Q)
    for start, stop in _query_chunks(value, sampling_locations, chunk_elements):
        count = stop - start
        grad_chunk = grad_heads[..., start:stop].reshape(batch * heads, channels, count, 1, 1)
        grids = _level_grids(sampling_locations[:, start:stop])
        attention = _level_attention(attention_weights[:, start:stop])
        for level, volume in enumerate(volumes):
            grid = grids[level]
            if grad_attention is not None:
                sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
                grad_level = (sampled * grad_chunk).sum(1).view(batch, heads, count, points)
                grad_attention[:, start:stop, :, level] = grad_level.transpose(1, 2)
            if grad_volumes is None and grad_locations is None:
                continue
            grad_sampled = grad_chunk * attention[level].view(batch * heads, 1, count, points, 1)
            grad_volume, grad_grid = torch.ops.aten.grid_sampler_3d_backward(
                grad_sampled, volume, grid, 0, 0, False, [grad_volumes is not None, grad_locations is not None]
            )
            if grad_volumes is not None:
                grad_volumes[level] += grad_volume
            if grad_locations is not None:
                grad_grid = grad_grid.view(batch, heads, count, points, 3).transpose(1, 2).flip(-1)
                grad_locations[:, start:stop, :, level] = 2 * grad_grid
    grad_value = None
    if grad_volumes is not None:
        grad_value = torch.cat([grad.view(batch, heads, channels, -1) for grad in grad_volumes], -1)
        grad_value = grad_value.permute(0, 3, 1, 2).contiguous()
    return grad_value, grad_locations, grad_attention


class ChunkedDeformableAttentionFunction(torch.autograd.Function):
    """The differentiable fast path: saves only its inputs and samples again, chunk by chunk, for backward."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, chunk_elements):
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        ctx.chunk_elements = chunk_elements
        return chunked_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, chunk_elements
        )

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4])
        grad_value, grad_locations, grad_attention = chunked_backward(
            grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, needs,
            ctx.chunk_elements,
        )
        return grad_value, None, None, grad_locations, grad_attention, None
