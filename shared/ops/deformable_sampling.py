"""The fast path of 3-D multi-scale deformable attention: chunked over queries, nothing kept for backward.

The reference keeps, for autograd, a ``(B·M, C/M, Q, K)`` sampled tensor per level, their stack and its
product with the attention weights: about ``3·B·Q·M·L·K·C/M`` numbers, near a gigabyte at the encoder's
37,440 queries. This path works query chunk by query chunk, adds each level's weighted samples straight
into the output and keeps only its inputs for the backward pass, which samples again chunk by chunk:
memory stays bounded by ``chunk_elements`` whatever the number of queries.

It samples with ATen's fused *2-D* bilinear kernels, whose CPU versions are vectorised (the 3-D ones are
not; 2-D forward and backward measured about 3x faster per point). A level ``(X, Y, Z)`` is laid out as
an image of height ``X`` and width ``Y·(Z + 1)``: the ``Z`` voxels of each ``y`` row side by side,
followed by one zero column. A trilinear sample at ``(x, y, z)`` is then the blend, by the ``y``
fraction, of two bilinear samples of that image in the rows ``y0`` and ``y0 + 1``: bilinear in ``(x, z)``,
the zero column (or the image border) giving zero padding at the ``z`` faces. A point whose ``z`` lies
more than a voxel beyond a face gets weight zero (it would read the neighbouring row).

A gather formulation (the eight corner indices and weights of every point into the flattened value,
a sparse CSR product forward, a sampled matmul and ``index_add_`` backward) measured slower than
these fused kernels: computing the corner tensors costs more than the sampling. See
``docs/deformable_attention.md``.

Conventions are those of :func:`shared.ops.deformable_attention.multi_scale_deformable_attention`
(``align_corners=False``, zero padding, locations ``(x, y, z)`` along the ``(X, Y, Z)`` axes, the levels
stored one after the other in ``value`` in the order of ``spatial_shapes``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: Sampled numbers (B·M · C/M · chunk queries · L·K) per chunk: 2**24 float32 values are 64 MiB.
DEFAULT_CHUNK_ELEMENTS = 2**24


def _query_chunks(value: Tensor, sampling_locations: Tensor, chunk_elements: int) -> list[tuple[int, int]]:
    """``[start, stop)`` query ranges whose sampled tensors hold at most ``chunk_elements`` numbers."""
    batch, queries, heads, levels, points, _ = sampling_locations.shape
    step = max(1, chunk_elements // max(1, 2 * batch * heads * value.shape[3] * levels * points))
    return [(start, min(start + step, queries)) for start in range(0, queries, step)]


def _level_images(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor) -> list[Tensor]:
    """Each level of ``value`` ``(B, S, M, C/M)`` as a ``(B·M, C/M, X, Y·(Z + 1))`` image, zero column after
    every ``y`` row."""
    batch, _, heads, channels = value.shape
    images = []
    for level, (size_x, size_y, size_z) in enumerate(spatial_shapes.tolist()):
        start = int(level_start_index[level])
        volume = value[:, start:start + size_x * size_y * size_z].permute(0, 2, 3, 1)
        volume = volume.reshape(batch * heads, channels, size_x, size_y, size_z)
        images.append(F.pad(volume, (0, 1)).view(batch * heads, channels, size_x, size_y * (size_z + 1)))
    return images


class RowPairs(NamedTuple):
    """The two bilinear samples of every point on one level, in ``(B, M, Qc, K, 2)`` order.

    ``grid`` ``(B·M, Qc, 2·K, 2)`` image coordinates for ``grid_sample`` (``align_corners=False``);
    ``row_weight`` ``(B, M, Qc, K, 2)`` the linear weights of rows ``y0`` and ``y0 + 1`` (zero outside the
    volume); ``row_slope`` their derivative with respect to the ``y`` fraction.
    """

    grid: Tensor
    row_weight: Tensor
    row_slope: Tensor


def _row_pairs(locations: Tensor, size: tuple[int, int, int]) -> RowPairs:
    """``locations`` ``(B, M, Qc, K, 3)`` of one level of size ``(X, Y, Z)`` to its row pairs."""
    _, size_y, size_z = size  # x is the image's height: grid_sample handles it, zero padding included
    batch, heads, queries, points, _ = locations.shape
    position_y = locations[..., 1] * size_y - 0.5  # voxel coordinates: centres at integers
    position_z = locations[..., 2] * size_z - 0.5
    row = position_y.floor()
    fraction = position_y - row
    rows = torch.stack([row, row + 1], -1)  # (B, M, Qc, K, 2)
    # z more than a voxel beyond a face reads nothing, not the neighbouring row.
    inside = (rows >= 0) & (rows <= size_y - 1) & ((position_z > -1) & (position_z < size_z)).unsqueeze(-1)
    row_slope = inside * torch.tensor([-1.0, 1.0], dtype=fraction.dtype, device=fraction.device)
    row_weight = torch.stack([1 - fraction, fraction], -1) * inside
    width = size_y * (size_z + 1)
    image_column = rows.clamp(0, size_y - 1) * (size_z + 1) + position_z.unsqueeze(-1)
    grid_width = (2 * image_column + 1) / width - 1
    grid_height = (2 * locations[..., 0] - 1).unsqueeze(-1).expand_as(grid_width)
    grid = torch.stack([grid_width, grid_height], -1).view(batch * heads, queries, points * 2, 2)
    return RowPairs(grid, row_weight, row_slope)


def _sample(image: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def chunked_forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """The forward computation without autograd; see :class:`ChunkedDeformableAttentionFunction`."""
    batch, _, heads, channels = value.shape
    queries, points = sampling_locations.shape[1], sampling_locations.shape[4]
    images = _level_images(value, spatial_shapes, level_start_index)
    sizes = spatial_shapes.tolist()
    output = value.new_zeros(batch, heads, channels, queries)
    for start, stop in _query_chunks(value, sampling_locations, chunk_elements):
        count = stop - start
        locations = sampling_locations[:, start:stop].permute(3, 0, 2, 1, 4, 5)  # (L, B, M, Qc, K, 3)
        attention = attention_weights[:, start:stop].permute(3, 0, 2, 1, 4)  # (L, B, M, Qc, K)
        for level, image in enumerate(images):
            pairs = _row_pairs(locations[level], sizes[level])
            weight = (pairs.row_weight * attention[level].unsqueeze(-1)).view(batch, heads, 1, count, 2 * points)
            sampled = _sample(image, pairs.grid).view(batch, heads, channels, count, 2 * points)
            output[..., start:stop] += (sampled * weight).sum(-1)
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
    says not needed), through ATen's fused bilinear sampling backward, level by level and chunk by chunk."""
    batch, _, heads, channels = value.shape
    queries, points = sampling_locations.shape[1], sampling_locations.shape[4]
    images = _level_images(value, spatial_shapes, level_start_index)
    sizes = spatial_shapes.tolist()
    grad_images: list[Tensor | None] | None = [None] * len(images) if needs[0] else None
    grad_locations = torch.zeros_like(sampling_locations) if needs[1] else None
    grad_attention = torch.zeros_like(attention_weights) if needs[2] else None
    grad_heads = grad_output.reshape(batch, queries, heads, channels).permute(0, 2, 3, 1)  # (B, M, C/M, Q)
    for start, stop in _query_chunks(value, sampling_locations, chunk_elements):
        count = stop - start
        grad_chunk = grad_heads[..., start:stop].reshape(batch, heads, channels, count, 1)
        locations = sampling_locations[:, start:stop].permute(3, 0, 2, 1, 4, 5)
        attention = attention_weights[:, start:stop].permute(3, 0, 2, 1, 4).unsqueeze(-1)  # (L, B, M, Qc, K, 1)
        for level, image in enumerate(images):
            pairs = _row_pairs(locations[level], sizes[level])
            if grad_attention is not None or grad_locations is not None:
                sampled = _sample(image, pairs.grid).view(batch, heads, channels, count, 2 * points)
                # d out / d (sample weight): the sample dotted with the output's gradient.
                grad_weight = (sampled * grad_chunk).sum(2).view(batch, heads, count, points, 2)
                if grad_attention is not None:
                    grad_level = (grad_weight * pairs.row_weight).sum(-1)  # (B, M, Qc, K)
                    grad_attention[:, start:stop, :, level] = grad_level.transpose(1, 2)
            if grad_images is None and grad_locations is None:
                continue
            weight = (pairs.row_weight * attention[level]).view(batch * heads, 1, count, 2 * points)
            grad_sampled = grad_chunk.reshape(batch * heads, channels, count, 1) * weight
            grad_image, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                grad_sampled, image, pairs.grid, 0, 0, False, [grad_images is not None, grad_locations is not None]
            )
            if grad_images is not None:
                previous = grad_images[level]
                grad_images[level] = grad_image if previous is None else previous.add_(grad_image)
            if grad_locations is not None:
                grad_level = _location_gradient(grad_grid, grad_weight, pairs.row_slope, attention[level],
                                                sizes[level])
                grad_locations[:, start:stop, :, level] = grad_level.transpose(1, 2)
    grad_value = None
    if grad_images is not None:
        grad_value = torch.zeros_like(value) if queries == 0 else _value_gradient(grad_images, sizes, value.shape)
    return grad_value, grad_locations, grad_attention


def _location_gradient(grad_grid: Tensor, grad_weight: Tensor, row_slope: Tensor, attention: Tensor,
                       size: tuple[int, int, int]) -> Tensor:
    """``(B, M, Qc, K, 3)`` gradient of the ``(x, y, z)`` locations of one level: ``x`` and ``z`` from the
    2-D kernel's grid gradient ``(B·M, Qc, 2·K, 2)`` (the two samples of a pair share them), ``y`` from
    the row blend, with ``grad_weight`` ``(B, M, Qc, K, 2)`` the gradient of each sample's weight."""
    _, size_y, size_z = size
    batch, heads, queries, points, _ = grad_weight.shape
    grad_grid = grad_grid.view(batch, heads, queries, points, 2, 2).sum(-2)
    grad_y = (grad_weight * row_slope).sum(-1) * attention[..., 0] * size_y
    grad_z = grad_grid[..., 0] * (2 * size_z / (size_y * (size_z + 1)))  # image column = row·(Z + 1) + z
    return torch.stack([2 * grad_grid[..., 1], grad_y, grad_z], -1)


def _value_gradient(grad_images: list[Tensor], sizes: list[list[int]], shape: torch.Size) -> Tensor:
    """The levels' image gradients back to the ``(B, S, M, C/M)`` value, zero columns dropped."""
    batch, _, heads, channels = shape
    volumes = [grad.view(batch, heads, channels, x, y, z + 1)[..., :z].reshape(batch, heads, channels, -1)
               for grad, (x, y, z) in zip(grad_images, sizes)]
    return torch.cat(volumes, -1).permute(0, 3, 1, 2).contiguous()


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
