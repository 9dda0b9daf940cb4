"""The Deformable DETR transformer in 3-D: encoder layers over the flattened feature levels, decoder layers
over the object queries with iterative box refinement.

Both attend across levels with :class:`shared.ops.MultiScaleDeformableAttention3D`; the layers are
post-norm as in Deformable DETR. Inputs are the feature levels flattened into one sequence
(``S = Σ X_l·Y_l·Z_l`` tokens, fine → coarse, ``z`` fastest within a level, the op's convention) with
``spatial_shapes`` ``(L, 3)`` and ``level_start_index`` ``(L,)``. Boxes are normalised
``(cx, cy, cz, w, h, d)`` in ``[0, 1]`` of the patch (:mod:`shared.boxes.normalized`).

Box refinement: decoder layer ``l`` attends around its reference boxes ``r_l`` and its box head predicts
``b_l = σ(head_l(h_l) + σ⁻¹(r_l))``; the next layer's references are ``r_{l+1} = b_l`` *detached*, so a
layer's loss trains its own head and the layers below through the query states only, never through an
earlier layer's box head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shared.ops import MultiScaleDeformableAttention3D


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """``σ⁻¹(x) = log(x / (1 - x))`` with ``x`` clamped into ``[eps, 1 - eps]`` (finite for boxes at 0 or 1)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class FeedForward(nn.Module):
    """Linear → ReLU → dropout → linear → dropout, added to the input and layer-normalised (post-norm)."""

    def __init__(self, channels: int, hidden_channels: int, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(channels, hidden_channels)
        self.linear2 = nn.Linear(hidden_channels, channels)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.linear2(self.dropout(torch.relu(self.linear1(x))))))


class BoxHead(nn.Module):
    """A 3-layer MLP (ReLU between) from a query state to 6 box logits; the last layer starts at zero, so an
    untrained head returns its reference box unchanged."""

    def __init__(self, channels: int, num_layers: int = 3):
        super().__init__()
        widths = [channels] * num_layers + [6]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x) if index == len(self.layers) - 1 else torch.relu(layer(x))
        return x


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention of every token over all levels around its own position, then the FFN.

    Args:
        channels: token width ``C``.
        num_heads, num_levels, num_points: of the deformable attention.
        feedforward_channels: hidden width of the FFN.
        dropout: after attention and inside the FFN.
        implementation: the op's implementation (``"auto"``, ``"fast"``, ``"reference"``).
    """

    def __init__(self, channels: int = 128, *, num_heads: int = 8, num_levels: int = 4, num_points: int = 4,
                 feedforward_channels: int = 1024, dropout: float = 0.0, implementation: str = "auto"):
        super().__init__()
        self.attention = MultiScaleDeformableAttention3D(channels, num_heads, num_levels, num_points,
                                                         implementation=implementation)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(channels)
        self.feedforward = FeedForward(channels, feedforward_channels, dropout)

    def forward(self, tokens: Tensor, position: Tensor, reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor) -> Tensor:
        """Shape: tokens, position ``(B, S, C)``; reference_points ``(B, S, L, 3)`` → ``(B, S, C)``."""
        attended = self.attention(tokens + position, reference_points, tokens, spatial_shapes, level_start_index)
        return self.feedforward(self.norm(tokens + self.dropout(attended)))


class DeformableDecoderLayer(nn.Module):
    """Self-attention among the queries, deformable cross-attention into the encoder's tokens, then the FFN.

    Arguments as for :class:`DeformableEncoderLayer`.
    """

    def __init__(self, channels: int = 128, *, num_heads: int = 8, num_levels: int = 4, num_points: int = 4,
                 feedforward_channels: int = 1024, dropout: float = 0.0, implementation: str = "auto"):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(channels, num_heads, dropout=dropout, batch_first=True)
        self.self_norm = nn.LayerNorm(channels)
        self.cross_attention = MultiScaleDeformableAttention3D(channels, num_heads, num_levels, num_points,
                                                               implementation=implementation)
        self.cross_norm = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)
        self.feedforward = FeedForward(channels, feedforward_channels, dropout)

    def forward(self, queries: Tensor, query_position: Tensor, reference_boxes: Tensor, memory: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor) -> Tensor:
        """Shape: queries, query_position ``(B, Q, C)``; reference_boxes ``(B, Q, L, 6)``; memory ``(B, S, C)``
        → ``(B, Q, C)``."""
        key = queries + query_position
        attended = self.self_attention(key, key, queries, need_weights=False)[0]
        queries = self.self_norm(queries + self.dropout(attended))
        attended = self.cross_attention(queries + query_position, reference_boxes, memory, spatial_shapes,
                                        level_start_index)
        queries = self.cross_norm(queries + self.dropout(attended))
        return self.feedforward(queries)


def level_reference_points(spatial_shapes: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """The normalised centre ``(i + 0.5) / n`` of every token of every level, in the flattened order.

    Shape:
        spatial_shapes ``(L, 3)`` → ``(S, 3)``.
    """
    points = []
    for shape in spatial_shapes.tolist():
        axes = [(torch.arange(size, dtype=dtype, device=spatial_shapes.device) + 0.5) / size for size in shape]
        points.append(torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3))
    return torch.cat(points)


class DeformableTransformerEncoder(nn.Module):
    """``num_layers`` :class:`DeformableEncoderLayer`; every token's reference point is its own centre,
    the same normalised position on every level. Keyword arguments go to the layers."""

    def __init__(self, num_layers: int = 3, channels: int = 128, **layer_options):
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(channels, **layer_options) for _ in range(num_layers))

    def forward(self, tokens: Tensor, position: Tensor, spatial_shapes: Tensor, level_start_index: Tensor) -> Tensor:
        """Shape: tokens, position ``(B, S, C)`` → memory ``(B, S, C)``."""
        points = level_reference_points(spatial_shapes, tokens.dtype)  # (S, 3)
        reference_points = points[None, :, None].expand(tokens.shape[0], -1, len(spatial_shapes), -1)
        for layer in self.layers:
            tokens = layer(tokens, position, reference_points, spatial_shapes, level_start_index)
        return tokens


class DeformableTransformerDecoder(nn.Module):
    """``num_layers`` :class:`DeformableDecoderLayer` with iterative box refinement (module docstring).

    Each layer has its own :class:`BoxHead` (``box_heads[l]``), which the network's losses read through
    the returned boxes. Keyword arguments go to the layers.
    """

    def __init__(self, num_layers: int = 6, channels: int = 128, **layer_options):
        super().__init__()
        self.layers = nn.ModuleList(DeformableDecoderLayer(channels, **layer_options) for _ in range(num_layers))
        self.box_heads = nn.ModuleList(BoxHead(channels) for _ in range(num_layers))

    def forward(self, queries: Tensor, query_position: Tensor, reference_boxes: Tensor, memory: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Run the layers, refining the boxes.

        Args:
            queries, query_position: content and position of the object queries.
            reference_boxes: the first layer's reference boxes (normalised; no gradient is kept).
            memory: the encoder's tokens.
            spatial_shapes, level_start_index: of the flattened levels.

        Returns:
            ``(states, boxes, references)``, one entry per layer: its output queries, its refined boxes
            (differentiable) and the reference boxes it attended around (detached).

        Shape:
            queries, query_position ``(B, Q, C)``; reference_boxes ``(B, Q, 6)``; memory ``(B, S, C)``;
            each returned entry ``(B, Q, C)`` or ``(B, Q, 6)``.
        """
        states, boxes, references = [], [], []
        reference = reference_boxes.detach()
        for layer, box_head in zip(self.layers, self.box_heads):
            per_level = reference[:, :, None].expand(-1, -1, len(spatial_shapes), -1)
            queries = layer(queries, query_position, per_level, memory, spatial_shapes, level_start_index)
            refined = torch.sigmoid(box_head(queries) + inverse_sigmoid(reference))
            states.append(queries)
            boxes.append(refined)
            references.append(reference)
            reference = refined.detach()
        return states, boxes, references
