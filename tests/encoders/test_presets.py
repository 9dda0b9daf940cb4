import json

import pytest
import torch

from shared.encoders import ENCODER_PRESETS, PlainConvEncoder, ResidualEncoder, build_encoder


@pytest.mark.parametrize("name", sorted(ENCODER_PRESETS))
@pytest.mark.parametrize("preset", ["paper", "small", "tiny"])
def test_every_preset_builds_and_declares_its_levels(name, preset):
    with torch.device("meta"):
        encoder = build_encoder(json.loads(json.dumps({"name": name, "preset": preset})), 3)
    assert encoder.in_channels == 3
    assert [level["channels"] for level in encoder.feature_info] == ENCODER_PRESETS[name][preset]["features"]
    strides = [level["stride"] for level in encoder.feature_info]
    assert strides[0] == 1 and all(b == 2 * a for a, b in zip(strides, strides[1:]))


def test_overrides_and_defaults():
    encoder = build_encoder({"name": "resenc", "preset": "tiny", "features": [4, 8, 8, 8]}, 1)
    assert isinstance(encoder, ResidualEncoder) and encoder.channels == [4, 8, 8, 8]
    with torch.device("meta"):
        default = build_encoder({"name": "plain"}, 1)
    assert isinstance(default, PlainConvEncoder) and default.channels == [32, 64, 128, 256, 320, 320]


def test_built_encoder_passes_through_after_a_channel_check():
    encoder = build_encoder({"name": "plain", "preset": "tiny"}, 2)
    assert build_encoder(encoder, 2) is encoder
    with pytest.raises(ValueError, match="in_channels=1"):
        build_encoder(encoder, 1)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "vit"}, "unknown encoder name 'vit'"),
        ({"name": "plain", "preset": "huge"}, "unknown preset 'huge'"),
        ({"name": "plain", "preset": "tiny", "blocks_per_stage": 2}, "does not take"),
        ({"preset": "tiny"}, "must be a dict with a 'name'"),
    ],
)
def test_bad_specs_raise(spec, message):
    with pytest.raises(ValueError, match=message):
        build_encoder(spec, 1)


def test_per_axis_strides_and_kernels_override_a_preset():
    encoder = build_encoder({"name": "plain", "preset": "tiny", "strides": [1, [2, 2, 1], 2, 2],
                             "kernel_sizes": [[3, 3, 1], 3, 3, 3]}, 1)
    assert encoder.strides == [1, (2, 2, 1), (4, 4, 2), (8, 8, 4)]
    assert encoder.stages[0][0].convs[0].conv.weight.shape[2:] == (3, 3, 1)
    with pytest.raises(ValueError, match=r"strides\[1\]"):
        build_encoder({"name": "plain", "preset": "tiny", "strides": [1, [2, 0, 2], 2, 2]}, 1)
