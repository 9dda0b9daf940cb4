"""Named encoder configurations and the one function that builds an encoder from a JSON-able spec."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from shared.encoders.base import Encoder
from shared.encoders.plain import PlainConvEncoder
from shared.encoders.resenc import ResidualEncoder

ENCODER_CLASSES: dict[str, type[Encoder]] = {"plain": PlainConvEncoder, "resenc": ResidualEncoder}

# paper: appendix C (Retina U-Net's plain encoder; ResEnc-L). small: CPU training on 64³–96³ patches
# in minutes. tiny: unit tests at 32³.
ENCODER_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "plain": {
        "paper": {"features": [32, 64, 128, 256, 320, 320], "strides": [1, 2, 2, 2, 2, 2], "convs_per_stage": 2},
        "small": {"features": [16, 32, 64, 128, 128], "strides": [1, 2, 2, 2, 2], "convs_per_stage": 2},
        "tiny": {"features": [8, 16, 32, 32], "strides": [1, 2, 2, 2], "convs_per_stage": 2},
    },
    "resenc": {
        "paper": {
            "features": [32, 64, 128, 256, 320, 320],
            "strides": [1, 2, 2, 2, 2, 2],
            "blocks_per_stage": [1, 3, 4, 6, 6, 6],
        },
        "small": {"features": [16, 32, 64, 128, 128], "strides": [1, 2, 2, 2, 2], "blocks_per_stage": [1, 1, 2, 2, 2]},
        "tiny": {"features": [8, 16, 32, 32], "strides": [1, 2, 2, 2], "blocks_per_stage": 1},
    },
}


def build_encoder(spec: dict[str, Any] | Encoder, in_channels: int) -> Encoder:
    """Builds an encoder from ``{"name": "plain"|"resenc", "preset": "paper"|"small"|"tiny", ...}``.

    Keys besides ``name`` and ``preset`` override the preset's constructor arguments
    (e.g. ``{"name": "resenc", "preset": "small", "blocks_per_stage": 1}``); without ``preset`` the
    class defaults (the paper's sizes) are used.

    Args:
        spec: the spec, or an already built encoder (returned as is after a channel check).
        in_channels: input channels of the images.

    Returns:
        The encoder.

    Raises:
        ValueError: unknown name, preset or argument, or a built encoder with other input channels.
    """
    if isinstance(spec, nn.Module):
        if getattr(spec, "in_channels", None) != in_channels or not hasattr(spec, "feature_info"):
            raise ValueError(
                f"the given encoder must declare feature_info and in_channels={in_channels}, "
                f"it has in_channels={getattr(spec, 'in_channels', None)}"
            )
        return spec
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"encoder spec must be a dict with a 'name' ({sorted(ENCODER_CLASSES)}), got {spec!r}")
    options = copy.deepcopy(dict(spec))
    name = options.pop("name")
    preset = options.pop("preset", None)
    if name not in ENCODER_CLASSES:
        raise ValueError(f"unknown encoder name {name!r}; choose one of {sorted(ENCODER_CLASSES)}")
    arguments: dict[str, Any] = {}
    if preset is not None:
        if preset not in ENCODER_PRESETS[name]:
            raise ValueError(f"unknown preset {preset!r} for encoder {name!r}; choose one of {sorted(ENCODER_PRESETS[name])}")
        arguments.update(copy.deepcopy(ENCODER_PRESETS[name][preset]))
    arguments.update(options)
    try:
        return ENCODER_CLASSES[name](in_channels, **arguments)
    except TypeError as error:
        raise ValueError(f"encoder {name!r} does not take an argument of spec {spec!r}: {error}") from error
