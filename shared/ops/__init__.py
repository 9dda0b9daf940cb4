"""Custom operators: 3-D multi-scale deformable attention (a reference and a fast path, and the layer)."""

from __future__ import annotations

from shared.ops.deformable_attention import multi_scale_deformable_attention, reference_deformable_attention

__all__ = ["multi_scale_deformable_attention", "reference_deformable_attention"]
