import pytest
import torch

from shared.decoders import UNetDecoder

LEVELS = [{"channels": c, "stride": s} for c, s in zip([4, 8, 16, 16], [1, 2, 4, 8])]


def _features(size, batch=1):
    return [torch.randn(batch, level["channels"], *(size // level["stride"],) * 3) for level in LEVELS]


def test_output_at_finest_resolution_and_dna_key_layout():
    decoder = UNetDecoder(LEVELS, 3)
    assert decoder(_features(16, batch=2)).shape == (2, 3, 16, 16, 16)
    keys = decoder.state_dict()
    assert "stages.0.convs.0.conv.weight" in keys and "transpconvs.2.weight" in keys and "seg_layers.2.bias" in keys
    assert not any(key.startswith("encoder.") for key in keys)
    # stage 0 is the coarsest: 16 → 16 channels at stride 4, input is the concatenation (32)
    assert decoder.stages[0].convs[0].conv.in_channels == 32 and decoder.transpconvs[2].out_channels == 4


def test_deep_supervision_returns_every_stage_fine_to_coarse():
    outputs = UNetDecoder(LEVELS, 2, deep_supervision=True)(_features(16))
    assert [tuple(o.shape) for o in outputs] == [(1, 2, 16, 16, 16), (1, 2, 8, 8, 8), (1, 2, 4, 4, 4)]


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_gradients_reach_every_used_parameter(deep_supervision):
    decoder = UNetDecoder(LEVELS, 2, convs_per_stage=[2, 1, 1], deep_supervision=deep_supervision)
    outputs = decoder(_features(16))
    outputs = outputs if deep_supervision else [outputs]
    sum((o * torch.randn_like(o)).sum() for o in outputs).backward()
    for name, parameter in decoder.named_parameters():
        # without deep supervision only the finest segmentation layer is used (the others exist to load checkpoints)
        unused = not deep_supervision and name.startswith("seg_layers.") and not name.startswith("seg_layers.2.")
        assert (parameter.grad is None) == unused, name
        if not unused:
            assert parameter.grad.abs().sum() > 0, name


def test_list_lengths_are_checked():
    with pytest.raises(ValueError, match="convs_per_stage has 2 entries .* 3 stages"):
        UNetDecoder(LEVELS, 1, convs_per_stage=[1, 1])
    with pytest.raises(ValueError, match="at least two levels"):
        UNetDecoder(LEVELS[:1], 1)
