"""Encoders: return feature maps fine → coarse and declare ``feature_info`` and ``stem_keys``.

``build_encoder({"name": "plain"|"resenc", "preset": "paper"|"small"|"tiny", ...}, in_channels)``
is how bundles and detectors obtain one.
"""

from __future__ import annotations

from shared.encoders.base import Encoder, check_divisible
from shared.encoders.plain import PlainConvEncoder
from shared.encoders.presets import ENCODER_CLASSES, ENCODER_PRESETS, build_encoder
from shared.encoders.resenc import ResidualEncoder

__all__ = [
    "ENCODER_CLASSES",
    "ENCODER_PRESETS",
    "Encoder",
    "PlainConvEncoder",
    "ResidualEncoder",
    "build_encoder",
    "check_divisible",
]
