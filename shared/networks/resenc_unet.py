"""ResEnc U-Net: encoder + U-Net decoder, the dense reconstruction network of MAE-style pre-training.

Keys mirror dynamic-network-architectures' ``ResidualEncoderUNet`` (``encoder.*``, ``decoder.stages.*``,
``decoder.transpconvs.*``, ``decoder.seg_layers.*``) so nnssl checkpoints load by name. DNA's decoder
also stores the encoder, which duplicates every encoder weight as ``decoder.encoder.*``; ours does
not, and such keys are dropped when loading a DNA state dict (they are copies of ``encoder.*``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shared.decoders.unet import UNetDecoder
from shared.encoders import Encoder, build_encoder, check_divisible

DEFAULT_ENCODER_SPEC: dict[str, Any] = {"name": "resenc", "preset": "paper"}
FOREIGN_DECODER_ENCODER_PREFIX = "decoder.encoder."


def _drop_decoder_encoder_copy(module, state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + FOREIGN_DECODER_ENCODER_PREFIX)]:
        del state_dict[key]


class ResEncUNet(nn.Module):
    """Encoder + U-Net decoder; the decoder's finest 1×1 segmentation layer is the output conv.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, or image channels for reconstruction).
        encoder_spec: a spec for :func:`shared.encoders.build_encoder` or a built encoder;
            ResEnc-L by default.
        decoder_convs_per_stage: conv blocks per decoder stage (nnssl's ResEnc-L: 1).
        deep_supervision: return every decoder stage's output (fine → coarse).

    Shape:
        (B, in_channels, X, Y, Z) → (B, out_channels, X, Y, Z) for encoders whose first stride is 1;
        X, Y, Z must be divisible by the encoder's coarsest stride.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        encoder_spec: dict[str, Any] | Encoder | None = None,
        decoder_convs_per_stage: int | Sequence[int] = 1,
        deep_supervision: bool = False,
    ):
        super().__init__()
        self.encoder = build_encoder(DEFAULT_ENCODER_SPEC if encoder_spec is None else encoder_spec, in_channels)
        self.decoder = UNetDecoder(
            self.encoder.feature_info,
            out_channels,
            convs_per_stage=decoder_convs_per_stage,
            kernel_sizes=getattr(self.encoder, "kernel_sizes", 3),
            deep_supervision=deep_supervision,
            spatial_dims=self.encoder.spatial_dims,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.encoder_prefix = "encoder."
        self.register_load_state_dict_pre_hook(_drop_decoder_encoder_copy)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Args:
            x: (B, in_channels, X, Y, Z).

        Returns:
            (B, out_channels, X, Y, Z), or a list fine → coarse with deep supervision.
        """
        check_divisible(x, self.encoder.feature_info[-1]["stride"], type(self).__name__)
        return self.decoder(self.encoder(x))
