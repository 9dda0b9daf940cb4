import pytest
import torch

from shared.decoders import UFPNDecoder
from shared.encoders import build_encoder

PAPER_LEVELS = [{"channels": c, "stride": s} for c, s in zip([32, 64, 128, 256, 320, 320], [1, 2, 4, 8, 16, 32])]


def _features(feature_info, size, batch=1):
    return [torch.randn(batch, level["channels"], *(size // level["stride"],) * 3) for level in feature_info]


def test_paper_widths_halve_above_the_detection_levels():
    with torch.device("meta"):
        decoder = UFPNDecoder(PAPER_LEVELS, channels=128, detection_strides=(4, 8, 16, 32))
    assert decoder.level_channels == [32, 64, 128, 128, 128, 128]
    # outputs: the finest level (segmentation) and the detection levels; stride 2 feeds only the path
    assert decoder.feature_info == [
        {"channels": 32, "stride": 1}, {"channels": 128, "stride": 4}, {"channels": 128, "stride": 8},
        {"channels": 128, "stride": 16}, {"channels": 128, "stride": 32},
    ]
    assert "P1" not in decoder.out and "P1" in decoder.up


def test_min_channels_bounds_the_fine_levels():
    levels = [{"channels": 4, "stride": s} for s in (1, 2, 4, 8)]
    decoder = UFPNDecoder(levels, channels=16, detection_strides=(8,), min_channels=6)
    assert decoder.level_channels == [6, 6, 8, 16]


@pytest.mark.parametrize("upsampling", ["transpose", "trilinear"])
def test_output_shapes_follow_feature_info(upsampling):
    encoder = build_encoder({"name": "plain", "preset": "tiny"}, 1)
    decoder = UFPNDecoder(encoder.feature_info, channels=16, detection_strides=(2, 4, 8), upsampling=upsampling)
    outputs = decoder(_features(encoder.feature_info, 32, batch=2))
    assert [tuple(o.shape) for o in outputs] == [
        (2, level["channels"], *(32 // level["stride"],) * 3) for level in decoder.feature_info
    ]


def test_top_down_path_carries_coarse_information_to_fine_levels():
    levels = [{"channels": 3, "stride": s} for s in (1, 2, 4)]
    decoder = UFPNDecoder(levels, channels=4, detection_strides=(2, 4))
    features = _features(levels, 8)
    changed = [f.clone() for f in features]
    changed[2] += 1.0
    before, after = decoder(features), decoder(changed)
    assert all(not torch.allclose(a, b) for a, b in zip(before, after))
    changed = [f.clone() for f in features]
    changed[0] += 1.0
    after = decoder(changed)
    assert not torch.allclose(before[0], after[0]) and torch.equal(before[2], after[2])


def test_gradients_reach_every_parameter():
    levels = [{"channels": c, "stride": s} for c, s in zip([4, 8, 8, 8], [1, 2, 4, 8])]
    decoder = UFPNDecoder(levels, channels=8, detection_strides=(4, 8))
    outputs = decoder(_features(levels, 16))
    sum((o * torch.randn_like(o)).sum() for o in outputs).backward()
    for name, parameter in decoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_without_the_fine_output_the_fine_levels_are_not_built():
    decoder = UFPNDecoder(PAPER_LEVELS, detection_strides=(4, 8, 16, 32), output_strides=(4, 8, 16, 32))
    assert sorted(decoder.lateral) == ["P2", "P3", "P4", "P5"]
    assert [o.shape[2] for o in decoder(_features(PAPER_LEVELS, 32))] == [8, 4, 2, 1]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="detection stride 64 is not an encoder stride"):
        UFPNDecoder(PAPER_LEVELS, detection_strides=(4, 64))
    with pytest.raises(ValueError, match="integer factors"):
        UFPNDecoder([{"channels": 4, "stride": 2}, {"channels": 4, "stride": 3}], detection_strides=(3,))
    decoder = UFPNDecoder(PAPER_LEVELS[:3], channels=8, detection_strides=(4,))
    with pytest.raises(ValueError, match="built for 3 levels, got 2"):
        decoder(_features(PAPER_LEVELS[:2], 8))


# 0.8 × 0.8 × 2.5 mm: z is pooled from the second stride-2 stage on.
ANISOTROPIC_LEVELS = [{"channels": c, "stride": s} for c, s in
                      zip([8, 16, 32, 32], [1, (2, 2, 1), (4, 4, 2), (8, 8, 4)])]


def test_anisotropic_levels_upsample_per_axis():
    decoder = UFPNDecoder(ANISOTROPIC_LEVELS, channels=16, detection_strides=(4, (8, 8, 4)))
    assert decoder.feature_info == [{"channels": 8, "stride": 1}, {"channels": 16, "stride": (4, 4, 2)},
                                    {"channels": 16, "stride": (8, 8, 4)}]
    assert decoder.up["P0"].weight.shape[2:] == (2, 2, 1) and decoder.up["P2"].weight.shape[2:] == (2, 2, 2)
    sizes = (16, 16, 8)
    features = [torch.randn(1, level["channels"], *(n // s for n, s in zip(sizes, stride)))
                for level, stride in zip(ANISOTROPIC_LEVELS, [(1, 1, 1), (2, 2, 1), (4, 4, 2), (8, 8, 4)])]
    with torch.no_grad():
        outputs = decoder(features)
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 16, 8), (4, 4, 4), (2, 2, 2)]


def test_an_int_detection_stride_names_the_level_of_that_coarsest_axis_stride_unless_ambiguous():
    assert UFPNDecoder(ANISOTROPIC_LEVELS, channels=8, detection_strides=(8,)).output_levels == [0, 3]
    assert UFPNDecoder(ANISOTROPIC_LEVELS, channels=8, detection_strides=(1,)).output_levels == [0]
    levels = [{"channels": 4, "stride": s} for s in (1, (2, 1, 1), (2, 2, 1))]
    with pytest.raises(ValueError, match=r"detection stride 2 matches levels \[1, 2\].*per axis"):
        UFPNDecoder(levels, channels=8, detection_strides=(2,))
    assert UFPNDecoder(levels, channels=8, detection_strides=((2, 2, 1),)).output_levels == [0, 2]


def test_a_repeated_stride_names_the_finest_of_its_levels():
    levels = [{"channels": 4, "stride": s} for s in (1, 1, 2, 4)]
    decoder = UFPNDecoder(levels, channels=8, detection_strides=(2, 4), output_strides=(1, 2, 4))
    assert decoder.output_levels == [0, 2, 3]
