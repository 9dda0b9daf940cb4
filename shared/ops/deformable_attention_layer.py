"""The layer around the op: projections, sampling offsets and attention weights, and their initialisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from shared.ops.deformable_attention import IMPLEMENTATIONS, multi_scale_deformable_attention
from shared.ops.deformable_sampling import DEFAULT_CHUNK_ELEMENTS


def sphere_directions(count: int) -> Tensor:
    """``count`` unit vectors spread evenly over the sphere (a Fibonacci lattice), ``(count, 3)``.

    The 3-D counterpart of Deformable-DETR's heads on a circle: head ``m`` starts looking along its own
    direction, and the lattice spreads them over all three axes rather than one plane.
    """
    index = torch.arange(count, dtype=torch.float64) + 0.5
    height = 1 - 2 * index / count
    radius = (1 - height**2).sqrt()
    angle = math.pi * (3 - math.sqrt(5)) * index  # the golden angle: no two heads share an azimuth
    return torch.stack([radius * angle.cos(), radius * angle.sin(), height], -1)


class MultiScaleDeformableAttention3D(nn.Module):
    """Multi-scale deformable attention over 3-D feature levels (Deformable DETR's ``MSDeformAttn`` in 3-D).

    Each query predicts, per head, level and point, an offset from its reference point and an attention
    weight (softmax over the ``L·K`` points of a head); the projected values are sampled there by
    :func:`shared.ops.deformable_attention.multi_scale_deformable_attention`.

    Initialisation as in Deformable DETR, in 3-D: the offset layer's weights are zero and its bias puts
    head ``m``'s point ``k`` at ``k + 1`` voxels of every level along the head's direction (evenly spread
    over the sphere, scaled so that the largest component is ``k + 1``); the attention weights start
    uniform (zero weights and bias); value and output projections are Xavier-uniform with zero bias.

    Args:
        embed_dim: channels of queries, values and output; divisible by ``num_heads``.
        num_heads: attention heads ``M``.
        num_levels: feature levels ``L``.
        num_points: sampling points ``K`` per head and level.
        implementation: ``"auto"``, ``"fast"`` or ``"reference"``, passed to the op.
        chunk_elements: memory bound of the fast path, passed to the op.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        *,
        implementation: str = "auto",
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        self.embed_dim, self.num_heads, self.num_levels, self.num_points = embed_dim, num_heads, num_levels, num_points
        self.implementation, self.chunk_elements = implementation, chunk_elements
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 3)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation described in the class docstring."""
        directions = sphere_directions(self.num_heads)
        directions = directions / directions.abs().amax(-1, keepdim=True)
        distance = torch.arange(1, self.num_points + 1, dtype=torch.float64).view(1, 1, -1, 1)
        bias = directions.view(self.num_heads, 1, 1, 3) * distance  # (M, 1, K, 3)
        bias = bias.expand(self.num_heads, self.num_levels, self.num_points, 3)
        nn.init.zeros_(self.sampling_offsets.weight)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def sampling_locations(self, query: Tensor, reference_points: Tensor, spatial_shapes: Tensor) -> Tensor:
        """Where each head samples: reference points plus the predicted offsets, ``(B, Q, M, L, K, 3)``.

        Around reference points the offsets are in voxels of each level; around reference boxes they are
        ``offset / K · size / 2`` (half the box size per ``K`` units), as in Deformable DETR's box refinement.
        """
        batch, queries, _ = query.shape
        offsets = self.sampling_offsets(query).view(
            batch, queries, self.num_heads, self.num_levels, self.num_points, 3
        )
        if reference_points.shape[-1] == 3:
            voxels = spatial_shapes.to(offsets.dtype).view(1, 1, 1, self.num_levels, 1, 3)
            return reference_points[:, :, None, :, None, :] + offsets / voxels
        centre, size = reference_points[:, :, None, :, None, :3], reference_points[:, :, None, :, None, 3:]
        return centre + offsets / self.num_points * size * 0.5

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value_input: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        value_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from every query to its sampling points on all levels.

        Args:
            query: the queries (content plus position embedding).
            reference_points: per query and level, a point ``(x, y, z)`` in ``[0, 1]`` or a box
                ``(cx, cy, cz, w, h, d)`` normalised the same way (two-stage / box refinement).
            value_input: the flattened feature levels, fine to coarse, each flattened with ``z`` fastest.
            spatial_shapes: int64 sizes ``(X, Y, Z)`` of the levels.
            level_start_index: where each level starts in ``S``.
            value_padding_mask: ``True`` where a value position is padding; it then contributes zero.

        Returns:
            The attended features.

        Shape:
            - query: ``(B, Q, E)``; reference_points: ``(B, Q, L, 3)`` or ``(B, Q, L, 6)``
            - value_input: ``(B, S, E)``; spatial_shapes: ``(L, 3)``; level_start_index: ``(L,)``
            - value_padding_mask: ``(B, S)``
            - output: ``(B, Q, E)``
        """
        batch, queries, _ = query.shape
        expected = (batch, queries, self.num_levels)
        if reference_points.shape[:3] != expected or reference_points.shape[-1] not in (3, 6):
            raise ValueError(f"reference_points must be (B, Q, L, 3) or (B, Q, L, 6) with B, Q, L = {expected}, "
                             f"got shape {tuple(reference_points.shape)}")
        if spatial_shapes.shape[0] != self.num_levels:
            raise ValueError(f"spatial_shapes has {spatial_shapes.shape[0]} levels, the layer {self.num_levels}")
        value = self.value_proj(value_input)
        if value_padding_mask is not None:
            value = value.masked_fill(value_padding_mask[..., None], 0.0)
        value = value.view(batch, value_input.shape[1], self.num_heads, self.embed_dim // self.num_heads)
        weights = self.attention_weights(query).view(batch, queries, self.num_heads, -1).softmax(-1)
        weights = weights.view(batch, queries, self.num_heads, self.num_levels, self.num_points)
        locations = self.sampling_locations(query, reference_points, spatial_shapes)
        output = multi_scale_deformable_attention(
            value, spatial_shapes, level_start_index, locations, weights,
            implementation=self.implementation, chunk_elements=self.chunk_elements,
        )
        return self.output_proj(output)
