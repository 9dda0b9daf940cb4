"""The Retina U-Net network: encoder + U-FPN decoder + dense heads + auxiliary segmentation head.

Only the network (tensors in, dict of logits out); anchors, matching, losses and box decoding are
the detector's other modules. Heads follow nnDetection's Retina U-Net defaults: one classification
and one regression head shared across the detection levels, each ``head_convs`` 3×3 conv-GroupNorm
(16 channels per group)-LeakyReLU blocks then a 3×3 output conv; normal(0, 0.01) weights, the
classification bias set to the prior 0.01, a learnable scale per level on the regression output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from shared.decoders.levels import find_level
from shared.decoders.ufpn import UFPNDecoder
from shared.detectors.anchors import flatten_head_outputs
from shared.detectors.box_coder import BOX_DELTAS
from shared.encoders import Encoder, build_encoder, check_divisible
from shared.layers import ConvNormAct, LayerSpec, initialize_head_normal, initialize_kaiming
from shared.layers.specs import DEFAULT_ACT

#: layouts of the auxiliary segmentation head: ``foreground`` (2 channels, nnDetection's
#: ``DiCESegmenterFgBg`` and the paper's choice) or ``classes`` (K + 1 channels)
SEGMENTATION_CLASSES = ("foreground", "classes")
HEAD_NORM: tuple = ("group", {"channels_per_group": 16, "affine": True})


class DenseHead(nn.Module):
    """``num_convs`` conv-norm-act blocks then a 3×3 output conv, applied alike to every level.

    Args:
        in_channels: input channels (the decoder's detection width).
        out_channels: output channels (anchors × values per anchor).
        num_convs: conv-norm-act blocks before the output conv (nnDetection: an input conv plus
            one internal conv, i.e. 2).
        channels: width of the internal blocks.
        norm: normalisation spec of the internal blocks.
        act: activation spec of the internal blocks.
        spatial_dims: 1, 2 or 3.

    Shape:
        (B, in_channels, X, Y, Z) → (B, out_channels, X, Y, Z).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_convs: int = 2,
        channels: int = 128,
        norm: LayerSpec = HEAD_NORM,
        act: LayerSpec = DEFAULT_ACT,
        spatial_dims: int = 3,
    ):
        super().__init__()
        widths = [in_channels] + [channels] * num_convs
        # No bias before a norm: the norm's shift makes it redundant (nnDetection does the same).
        self.conv_internal = nn.Sequential(
            *[
                ConvNormAct(a, b, 3, spatial_dims=spatial_dims, norm=norm, act=act, bias=norm is None)
                for a, b in zip(widths, widths[1:])
            ]
        )
        self.conv_out = Conv[Conv.CONV, spatial_dims](widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv_internal(x))


class RetinaUNetNetwork(nn.Module):
    """Encoder + U-FPN + shared classification / regression heads + segmentation head.

    Args:
        in_channels: image channels.
        num_classes: foreground classes K (sigmoid per class; no background logit in the heads).
        encoder: a built encoder or a spec ``{"name": "plain"|"resenc", "preset": ..., ...}``.
        decoder_channels: U-FPN width at the detection levels.
        detection_strides: cumulative strides of the levels the heads run on, fine → coarse; an int
            names the level whose coarsest axis has that stride (the same depth on an anisotropic
            encoder), a per-axis list names a level exactly. ``self.detection_strides`` holds the
            levels' actual strides (an int, or one per axis where they differ).
        num_anchors: anchors per position A.
        head_convs: conv-norm-act blocks in each head before its output conv.
        head_norm: normalisation spec of the head blocks.
        head_act: activation spec of the head blocks.
        segmentation: build the auxiliary segmentation head on the finest level.
        segmentation_classes: ``"foreground"`` (default, the paper's): the head separates foreground
            from background (2 channels), so the auxiliary task does not turn into classification;
            ``"classes"``: K + 1 channels, one per class plus background. Detections never use it.
        prior_probability: initial sigmoid output of the classification head.
        learn_scale: a learnable factor per detection level on the regression output.
        min_decoder_channels: smallest U-FPN width at the fine, segmentation-only levels.
        dense_output: return one (B, K + 6, M) tensor instead of the dict (for MONAI's
            ``verify_net_in_out`` and TorchScript export; see :func:`shared.detectors.export.split_dense_output`).

    Shape:
        ``forward`` takes (B, in_channels, X, Y, Z) with X, Y, Z divisible by the encoder's coarsest
        stride and returns ``{"cls_logits": [(B, A·K, X_l, Y_l, Z_l)], "box_regression":
        [(B, A·6, X_l, Y_l, Z_l)], "seg_logits": (B, S, X, Y, Z)}`` (S = 2, or K + 1 with
        ``segmentation_classes="classes"``) with one list entry per
        detection level, channel ``a·K + k`` for anchor a and class k, ``a·6 + j`` for delta j.
        With ``dense_output`` it returns (B, K + 6, M): per anchor its K class logits then its 6 box
        deltas, the M anchors of all levels in the order of ``flatten_head_outputs`` (level → x → y
        → z → anchor); no segmentation output.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        encoder: dict[str, Any] | Encoder,
        decoder_channels: int = 128,
        detection_strides: Sequence[int | Sequence[int]] = (4, 8, 16, 32),
        num_anchors: int = 27,
        head_convs: int = 2,
        head_norm: LayerSpec = HEAD_NORM,
        head_act: LayerSpec = DEFAULT_ACT,
        segmentation: bool = True,
        segmentation_classes: str = "foreground",
        prior_probability: float = 0.01,
        learn_scale: bool = True,
        min_decoder_channels: int = 8,
        dense_output: bool = False,
    ):
        super().__init__()
        if num_classes < 1 or num_anchors < 1:
            raise ValueError(f"num_classes and num_anchors must be positive, got {num_classes}, {num_anchors}")
        if segmentation_classes not in SEGMENTATION_CLASSES:
            raise ValueError(f"segmentation_classes: expected one of {SEGMENTATION_CLASSES}, got {segmentation_classes!r}")
        self.encoder = build_encoder(encoder, in_channels)
        self.encoder_prefix = "encoder."
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        encoder_strides = [level["stride"] for level in self.encoder.feature_info]
        self.detection_strides = tuple(
            encoder_strides[find_level(encoder_strides, s, self.encoder.spatial_dims)] for s in detection_strides
        )
        self.segmentation = segmentation
        self.segmentation_classes = segmentation_classes
        self.dense_output = bool(dense_output)
        finest = self.encoder.feature_info[0]["stride"]
        if segmentation and finest != 1:
            raise ValueError(f"the segmentation head needs an encoder whose first stride is 1, got {finest}")
        output_strides = [*((finest,) if segmentation else ()), *self.detection_strides]
        spatial_dims = self.encoder.spatial_dims
        self.decoder = UFPNDecoder(
            self.encoder.feature_info,
            channels=decoder_channels,
            detection_strides=self.detection_strides,
            output_strides=output_strides,
            min_channels=min_decoder_channels,
            spatial_dims=spatial_dims,
        )
        self._output_index = {level["stride"]: i for i, level in enumerate(self.decoder.feature_info)}
        head = dict(num_convs=head_convs, channels=decoder_channels, norm=head_norm, act=head_act, spatial_dims=spatial_dims)
        self.classification_head = DenseHead(decoder_channels, num_anchors * num_classes, **head)
        self.regression_head = DenseHead(decoder_channels, num_anchors * BOX_DELTAS, **head)
        initialize_head_normal(self.classification_head)
        initialize_head_normal(self.regression_head)
        initialize_head_normal(self.classification_head.conv_out, prior_probability=prior_probability)
        scales = torch.ones(len(self.detection_strides))
        if learn_scale:
            self.regression_scales = nn.Parameter(scales)
        else:
            self.register_buffer("regression_scales", scales)
        if segmentation:
            seg_width = self.decoder.feature_info[0]["channels"]
            seg_channels = 2 if segmentation_classes == "foreground" else num_classes + 1
            self.segmentation_head = Conv[Conv.CONV, spatial_dims](seg_width, seg_channels, 1)
            initialize_kaiming(self.segmentation_head)

    def forward(self, images: torch.Tensor) -> dict[str, Any] | torch.Tensor:
        """Args:
            images: (B, C, X, Y, Z).

        Returns:
            ``cls_logits`` and ``box_regression`` (lists over ``detection_strides``) and, with
            segmentation, ``seg_logits`` (B, S, X, Y, Z); with ``dense_output`` the (B, K + 6, M)
            tensor of the class docstring.
        """
        check_divisible(images, self.encoder.feature_info[-1]["stride"], type(self).__name__)
        decoded = self.decoder(self.encoder(images))
        levels = [decoded[self._output_index[stride]] for stride in self.detection_strides]
        outputs: dict[str, Any] = {
            "cls_logits": [self.classification_head(x) for x in levels],
            "box_regression": [self.regression_head(x) * self.regression_scales[i] for i, x in enumerate(levels)],
        }
        if self.dense_output:
            cls = flatten_head_outputs(outputs["cls_logits"], self.num_classes)  # (B, M, K)
            deltas = flatten_head_outputs(outputs["box_regression"], BOX_DELTAS)  # (B, M, 6)
            return torch.cat([cls, deltas], dim=2).transpose(1, 2)
        if self.segmentation:
            outputs["seg_logits"] = self.segmentation_head(decoded[0])
        return outputs
