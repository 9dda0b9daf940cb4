"""The U-Net decoder of a ResEnc U-Net (dynamic-network-architectures' ``UNetDecoder``).

From the coarsest level up: a transposed conv (kernel = stride = level ratio, per axis) to the next finer
level's size and width, concatenation with that level's skip, then ``convs_per_stage`` conv blocks.
Keys match DNA (``stages.{i}.convs.{j}.conv.*``, ``transpconvs.{i}.*``, ``seg_layers.{i}.*``) so an
nnU-Net / nnssl decoder loads by name. Unlike DNA the decoder keeps no reference to the encoder
(DNA's copy makes every encoder weight appear twice in a state dict); it is sized from
``feature_info`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from shared.decoders.levels import read_levels
from shared.layers import LayerSpec, StackedConvBlocks, initialize_kaiming, per_stage, per_stage_per_axis
from shared.layers.specs import DEFAULT_ACT, DEFAULT_NORM


class UNetDecoder(nn.Module):
    """Transposed-conv up, concatenate skip, conv blocks; a 1×1 segmentation layer per stage.

    A segmentation layer is built for every stage even without deep supervision (as DNA does) so
    that checkpoints of either kind load; only the finest is used then.

    Args:
        feature_info: the encoder's ``[{"channels", "stride"}, ...]`` fine → coarse.
        out_channels: channels of the segmentation / reconstruction output.
        convs_per_stage: conv blocks per decoder stage, ordered coarse → fine as DNA orders its
            stages (a scalar broadcasts; one entry per encoder level minus one).
        kernel_sizes: kernel per encoder level, fine → coarse, each an int or one per axis (a scalar
            broadcasts); decoder stage ``i`` uses the kernel of the level it outputs.
        deep_supervision: return every stage's output (fine → coarse) instead of only the finest.
        spatial_dims: 1, 2 or 3.
        norm: normalisation spec.
        act: activation spec.
        conv_bias: bias of the transposed and stage convs.

    Shape:
        list of (B, C_l, X / s_l, ...) → (B, out_channels, X / s_0, ...), or with deep supervision
        a list of (B, out_channels, X / s_l, ...) for l = 0 .. L - 2.
    """

    def __init__(
        self,
        feature_info: Sequence[dict],
        out_channels: int,
        *,
        convs_per_stage: int | Sequence[int] = 1,
        kernel_sizes: int | Sequence[int | Sequence[int]] = 3,
        deep_supervision: bool = False,
        spatial_dims: int = 3,
        norm: LayerSpec = DEFAULT_NORM,
        act: LayerSpec = DEFAULT_ACT,
        conv_bias: bool = True,
    ):
        super().__init__()
        channels, _, ratios = read_levels(feature_info, spatial_dims)
        if len(channels) < 2:
            raise ValueError("UNetDecoder needs an encoder with at least two levels")
        num_stages = len(channels) - 1
        convs_per_stage = per_stage(convs_per_stage, num_stages, "convs_per_stage")
        kernel_sizes = per_stage_per_axis(kernel_sizes, len(channels), spatial_dims, "kernel_sizes")
        self.num_levels = len(channels)
        self.deep_supervision = deep_supervision
        transposed = Conv[Conv.CONVTRANS, spatial_dims]
        conv = Conv[Conv.CONV, spatial_dims]
        stages, transpconvs, seg_layers = [], [], []
        for stage in range(num_stages):
            coarse, fine = self.num_levels - 1 - stage, self.num_levels - 2 - stage
            ratio = ratios[fine]
            transpconvs.append(transposed(channels[coarse], channels[fine], ratio, stride=ratio, bias=conv_bias))
            stages.append(
                StackedConvBlocks(
                    convs_per_stage[stage], 2 * channels[fine], channels[fine], kernel_sizes[fine],
                    spatial_dims=spatial_dims, norm=norm, act=act, bias=conv_bias,
                )
            )
            seg_layers.append(conv(channels[fine], out_channels, 1, bias=True))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        self.seg_layers = nn.ModuleList(seg_layers)
        initialize_kaiming(self)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """Args:
            features: the encoder's maps, fine → coarse.

        Returns:
            The finest output, or with deep supervision all stage outputs fine → coarse.
        """
        if len(features) != self.num_levels:
            raise ValueError(f"UNetDecoder was built for {self.num_levels} levels, got {len(features)} feature maps")
        x = features[-1]
        outputs = []
        for stage, (up, blocks) in enumerate(zip(self.transpconvs, self.stages)):
            x = blocks(torch.cat((up(x), features[-(stage + 2)]), dim=1))
            if self.deep_supervision:
                outputs.append(self.seg_layers[stage](x))
        if self.deep_supervision:
            return outputs[::-1]
        return self.seg_layers[-1](x)
