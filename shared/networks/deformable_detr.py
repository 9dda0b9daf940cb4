"""The Deformable DETR network in 3-D: encoder + channel mapper + deformable transformer + set heads.

Only the network (images in, dict of per-query logits and normalised boxes out); matching, losses and
the conversion to voxel boxes are the detector's (:mod:`shared.detectors.deformable_detr`). The paper's
configuration (nnDetection's ``deformable_detr_sigm_for_ResEnc``): the last 4 encoder levels mapped to
128 channels by a 1×1 conv + GroupNorm, a 3-D sine position encoding plus a learnt embedding per level,
3 encoder and 6 decoder layers (8 heads, 4 points per level and head, FFN 1024, dropout 0), two-stage
queries and iterative box refinement.

Two-stage: every encoder token proposes a box, a grid box at its centre of side ``proposal_scale · 2^l``
on level ``l`` refined by a box head, with class logits from a linear head; the ``num_queries``
highest-scoring proposals (their largest class logit) become the decoder's first reference boxes
(detached) and, through a sine embedding of the box, its query contents and positions. The proposals'
outputs are returned for their auxiliary loss.

Boxes are normalised ``(cx, cy, cz, w, h, d)`` in ``[0, 1]`` of the input patch
(:mod:`shared.boxes.normalized`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from shared.decoders.deformable_transformer import (
    BoxHead,
    DeformableTransformerDecoder,
    DeformableTransformerEncoder,
    inverse_sigmoid,
    level_reference_points,
)
from shared.encoders import Encoder, build_encoder, check_divisible
from shared.layers.position_encoding import sine_coordinate_embedding, sine_position_encoding
from shared.ops import MultiScaleDeformableAttention3D


class ChannelMapper(nn.Module):
    """A 1×1×1 conv (with bias) + GroupNorm per level, from the encoder's widths to ``channels``.

    Shape:
        list of ``(B, C_l, X_l, Y_l, Z_l)`` → list of ``(B, channels, X_l, Y_l, Z_l)``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 128, *, num_groups: int = 16):
        super().__init__()
        if channels % num_groups:
            raise ValueError(f"channels ({channels}) must be divisible by num_groups ({num_groups})")
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv3d(width, channels, 1), nn.GroupNorm(num_groups, channels)) for width in in_channels
        )
        for level in self.levels:
            nn.init.xavier_uniform_(level[0].weight)
            nn.init.zeros_(level[0].bias)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        return [level(x) for level, x in zip(self.levels, features)]


class DeformableDETRNetwork(nn.Module):
    """Encoder + channel mapper + two-stage deformable transformer with box refinement + class heads.

    Args:
        in_channels: image channels.
        num_classes: foreground classes K (a sigmoid per class, no background logit).
        encoder: a built encoder or a spec ``{"name": "plain"|"resenc", "preset": ..., ...}``.
        num_queries: object queries Q, the top-Q encoder proposals (planned from the data,
            :func:`shared.detectors.deformable_detr.plan_queries`).
        num_levels: the encoder's last ``num_levels`` levels feed the transformer.
        hidden_channels: transformer width C.
        num_heads: attention heads.
        num_points: sampling points per head and level.
        encoder_layers, decoder_layers: transformer depth.
        feedforward_channels: FFN hidden width.
        dropout: dropout in the transformer layers.
        mapper_groups: GroupNorm groups of the channel mapper.
        proposal_scale: side of the level-0 grid proposals, a fraction of the patch (doubling per level).
        prior_probability: initial sigmoid output of the class heads.
        temperature: of the sine encodings.
        implementation: the deformable attention op's (``"auto"``, ``"fast"``, ``"reference"``).
        dense_output: return one ``(B, K + 6, Q)`` tensor (the last layer's class logits then its
            normalised boxes per query) instead of the dict, for ``verify_net_in_out`` and export.

    Shape:
        ``forward`` takes ``(B, in_channels, X, Y, Z)``, sizes divisible by the encoder's coarsest stride,
        and returns ``{"class_logits": [(B, Q, K)] per decoder layer, "boxes": [(B, Q, 6)] per decoder
        layer, "reference_boxes": [(B, Q, 6)] per decoder layer (detached), "proposal_logits": (B, S, K),
        "proposal_boxes": (B, S, 6)}`` with ``S`` the tokens of all levels; the last layer's entries are
        the predictions, the others and the proposals feed auxiliary losses.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        encoder: dict[str, Any] | Encoder,
        num_queries: int = 100,
        num_levels: int = 4,
        hidden_channels: int = 128,
        num_heads: int = 8,
        num_points: int = 4,
        encoder_layers: int = 3,
        decoder_layers: int = 6,
        feedforward_channels: int = 1024,
        dropout: float = 0.0,
        mapper_groups: int = 16,
        proposal_scale: float = 0.05,
        prior_probability: float = 0.01,
        temperature: float = 10000.0,
        implementation: str = "auto",
        dense_output: bool = False,
    ):
        super().__init__()
        if num_classes < 1 or num_queries < 1 or decoder_layers < 1:
            raise ValueError(f"num_classes, num_queries and decoder_layers must be positive, got "
                             f"{num_classes}, {num_queries}, {decoder_layers}")
        self.encoder = build_encoder(encoder, in_channels)
        self.encoder_prefix = "encoder."
        levels = self.encoder.feature_info
        if not 1 <= num_levels <= len(levels):
            raise ValueError(f"num_levels must be 1..{len(levels)} (the encoder's levels), got {num_levels}")
        self.in_channels, self.num_classes, self.num_queries = in_channels, num_classes, int(num_queries)
        self.num_levels, self.hidden_channels = num_levels, hidden_channels
        self.proposal_scale, self.temperature = float(proposal_scale), float(temperature)
        self.dense_output = bool(dense_output)
        self.detection_strides = tuple(level["stride"] for level in levels[-num_levels:])
        self.channel_mapper = ChannelMapper([level["channels"] for level in levels[-num_levels:]], hidden_channels,
                                            num_groups=mapper_groups)
        self.level_embedding = nn.Parameter(torch.empty(num_levels, hidden_channels))
        layer = dict(num_heads=num_heads, num_levels=num_levels, num_points=num_points,
                     feedforward_channels=feedforward_channels, dropout=dropout, implementation=implementation)
        self.transformer_encoder = DeformableTransformerEncoder(encoder_layers, hidden_channels, **layer)
        self.transformer_decoder = DeformableTransformerDecoder(decoder_layers, hidden_channels, **layer)
        self.proposal_projection = nn.Linear(hidden_channels, hidden_channels)
        self.proposal_norm = nn.LayerNorm(hidden_channels)
        self.proposal_class_head = nn.Linear(hidden_channels, num_classes)
        self.proposal_box_head = BoxHead(hidden_channels)
        # six box values × C/2 sine features → query position and content (C each)
        self.query_projection = nn.Linear(3 * hidden_channels, 2 * hidden_channels)
        self.query_norm = nn.LayerNorm(2 * hidden_channels)
        self.class_heads = nn.ModuleList(nn.Linear(hidden_channels, num_classes) for _ in range(decoder_layers))
        self._initialize(prior_probability)

    def _initialize(self, prior_probability: float) -> None:
        """Deformable DETR's: Xavier-uniform transformer weights (the attention layers then their own
        initialisation), a normal level embedding, class biases at the prior."""
        for module in (self.transformer_encoder.layers, self.transformer_decoder.layers, self.proposal_projection,
                       self.query_projection):
            for parameter in module.parameters():
                if parameter.dim() > 1:
                    nn.init.xavier_uniform_(parameter)
        for module in self.modules():
            if isinstance(module, MultiScaleDeformableAttention3D):
                module.reset_parameters()
        nn.init.normal_(self.level_embedding)
        bias = -math.log((1 - prior_probability) / prior_probability)
        for head in (self.proposal_class_head, *self.class_heads):
            nn.init.constant_(head.bias, bias)

    def flatten_levels(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The mapped levels as one token sequence with its position encoding.

        Returns:
            ``(tokens (B, S, C), position (B, S, C), spatial_shapes (L, 3) int64, level_start_index (L,))``.
        """
        shapes = [tuple(x.shape[2:]) for x in features]
        tokens = torch.cat([x.flatten(2).transpose(1, 2) for x in features], dim=1)
        position = torch.cat([
            (sine_position_encoding(shape, self.hidden_channels, temperature=self.temperature, device=tokens.device)
             .to(tokens.dtype) + self.level_embedding[level].view(-1, 1, 1, 1)).flatten(1).transpose(0, 1)
            for level, shape in enumerate(shapes)
        ])
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=tokens.device)
        level_start_index = torch.cat([spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]])
        return tokens, position[None].expand(tokens.shape[0], -1, -1), spatial_shapes, level_start_index

    def grid_proposals(self, spatial_shapes: Tensor) -> tuple[Tensor, Tensor]:
        """A box per token: its centre, side ``proposal_scale · 2^l`` on level ``l``; and whether it lies
        well inside the patch (every value in ``(0.01, 0.99)``), the only ones eligible as queries.

        Shape:
            spatial_shapes ``(L, 3)`` → boxes ``(S, 6)``, valid ``(S,)``.
        """
        centres = level_reference_points(spatial_shapes)
        sizes = torch.cat([torch.full((int(shape.prod()), 3), self.proposal_scale * 2.0**level,
                                      device=centres.device) for level, shape in enumerate(spatial_shapes)])
        boxes = torch.cat([centres, sizes], dim=1)
        return boxes, ((boxes > 0.01) & (boxes < 0.99)).all(dim=1)

    def forward(self, images: Tensor) -> dict[str, Any] | Tensor:
        """Args:
            images: ``(B, C, X, Y, Z)``.

        Returns:
            The dict of the class docstring, or with ``dense_output`` the ``(B, K + 6, Q)`` tensor.
        """
        check_divisible(images, self.encoder.feature_info[-1]["stride"], type(self).__name__)
        features = self.channel_mapper(self.encoder(images)[-self.num_levels:])
        tokens, position, spatial_shapes, level_start_index = self.flatten_levels(features)
        if tokens.shape[1] < self.num_queries:
            raise ValueError(f"{type(self).__name__}: the input {tuple(images.shape[2:])} gives {tokens.shape[1]} "
                             f"tokens, fewer than num_queries={self.num_queries}; use a larger patch or fewer queries")
        memory = self.transformer_encoder(tokens, position, spatial_shapes, level_start_index)
        grid, valid = self.grid_proposals(spatial_shapes)
        hidden = self.proposal_norm(self.proposal_projection(memory))
        proposal_logits = self.proposal_class_head(hidden)
        proposal_boxes = torch.sigmoid(self.proposal_box_head(hidden) + inverse_sigmoid(grid).to(hidden.dtype))
        scores = proposal_logits.detach().amax(dim=-1).masked_fill(~valid, float("-inf"))
        chosen = scores.topk(self.num_queries, dim=1).indices  # (B, Q)
        reference = proposal_boxes.detach().gather(1, chosen[..., None].expand(-1, -1, 6))
        embedding = sine_coordinate_embedding(reference, self.hidden_channels // 2, temperature=self.temperature)
        query_position, queries = self.query_norm(self.query_projection(embedding)).split(self.hidden_channels, -1)
        states, boxes, references = self.transformer_decoder(queries, query_position, reference, memory,
                                                             spatial_shapes, level_start_index)
        class_logits = [head(state) for head, state in zip(self.class_heads, states)]
        if self.dense_output:
            return torch.cat([class_logits[-1], boxes[-1]], dim=-1).transpose(1, 2)
        return {"class_logits": class_logits, "boxes": boxes, "reference_boxes": references,
                "proposal_logits": proposal_logits, "proposal_boxes": proposal_boxes}
