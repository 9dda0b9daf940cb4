"""Custom operators: 3-D multi-scale deformable attention.

Three layers as in Deformable-DETR's ``models/ops``: the sampling kernels (``deformable_sampling``), the
differentiable op with its pure-PyTorch reference (``deformable_attention``) and the ``nn.Module`` that
owns the projections and their initialisation (``deformable_attention_layer``).
"""

from __future__ import annotations

from shared.ops.deformable_attention import multi_scale_deformable_attention, reference_deformable_attention
from shared.ops.deformable_attention_layer import MultiScaleDeformableAttention3D

__all__ = ["MultiScaleDeformableAttention3D", "multi_scale_deformable_attention", "reference_deformable_attention"]
