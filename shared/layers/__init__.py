"""Building blocks shared by every network: layer specs, conv-norm-activation blocks, residual blocks.

Layers are described by JSON-friendly specs (``norm=("instance", {"affine": True})``,
``act=("leakyrelu", {"negative_slope": 0.01})``), resolved through MONAI's layer factories, and named
like dynamic-network-architectures' blocks so that nnU-Net / nnssl weights load by key.
"""

from __future__ import annotations

from shared.layers.blocks import ConvNormAct, StackedConvBlocks
from shared.layers.initialization import initialize_head_normal, initialize_kaiming
from shared.layers.residual import BasicResidualBlock, StackedResidualBlocks
from shared.layers.specs import LayerSpec, build_activation, build_norm, per_stage
from shared.layers.strides import compact, cumulative_strides, per_axis, per_stage_per_axis

__all__ = [
    "BasicResidualBlock",
    "ConvNormAct",
    "LayerSpec",
    "StackedConvBlocks",
    "StackedResidualBlocks",
    "build_activation",
    "build_norm",
    "compact",
    "cumulative_strides",
    "initialize_head_normal",
    "initialize_kaiming",
    "per_axis",
    "per_stage",
    "per_stage_per_axis",
]
