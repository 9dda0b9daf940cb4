import pytest
import torch

from shared.encoders import ResidualEncoder, build_encoder

TINY = dict(features=[8, 16, 32, 32], strides=[1, 2, 2, 2], blocks_per_stage=[1, 2, 1, 2])
PAPER = dict(features=[32, 64, 128, 256, 320, 320], strides=[1, 2, 2, 2, 2, 2], blocks_per_stage=[1, 3, 4, 6, 6, 6])


def _weighted_sum(outputs):
    generator = torch.Generator().manual_seed(1)
    return sum((o * torch.randn(o.shape, generator=generator, dtype=o.dtype)).sum() for o in outputs)


def _reference_unet(in_channels, config):
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    stages = len(config["features"])
    return unet.ResidualEncoderUNet(
        in_channels, stages, config["features"], torch.nn.Conv3d, config.get("kernel_sizes", 3), config["strides"],
        config["blocks_per_stage"],
        3, 1, True, torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU,
        {"inplace": True},
    )


def _encoder_state(reference):
    return {k[len("encoder."):]: v for k, v in reference.state_dict().items() if k.startswith("encoder.")}


@pytest.mark.parametrize("preset, size", [("tiny", 32), ("small", 64)])
def test_shapes_follow_feature_info(preset, size):
    encoder = build_encoder({"name": "resenc", "preset": preset}, 1)
    with torch.no_grad():
        features = encoder(torch.randn(1, 1, size, size, size))
    assert [f.shape[1] for f in features] == [level["channels"] for level in encoder.feature_info]
    assert [size // f.shape[2] for f in features] == [level["stride"] for level in encoder.feature_info]
    assert encoder.stem_keys == ("stem.",)


def test_zero_init_residual_makes_blocks_start_as_skips():
    encoder = ResidualEncoder(1, **TINY)
    norms = [b.conv2.norm for stage in encoder.stages for b in stage.blocks]
    assert all(torch.count_nonzero(n.weight) == 0 and torch.count_nonzero(n.bias) == 0 for n in norms)
    assert all(torch.count_nonzero(b.conv2.norm.weight) > 0 for b in ResidualEncoder(1, **TINY, zero_init_residual=False).stages[0].blocks)


def test_gradients_reach_every_parameter():
    encoder = ResidualEncoder(1, **TINY, zero_init_residual=False)
    _weighted_sum(encoder(torch.randn(2, 1, 16, 16, 16))).backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_wrong_input_channels_and_list_lengths_raise():
    with pytest.raises(ValueError, match="built for 1 input channel.*has 2"):
        ResidualEncoder(1, **TINY)(torch.randn(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match=r"blocks_per_stage has 3 entries \[1, 1, 1\] but there are 4 stages"):
        ResidualEncoder(1, features=[8, 16, 32, 32], strides=2, blocks_per_stage=[1, 1, 1])


def test_resenc_l_parameter_count_matches_paper_and_reference():
    with torch.device("meta"):
        encoder = build_encoder({"name": "resenc", "preset": "paper"}, 1)
        reference = _reference_unet(1, PAPER).encoder
    count = sum(p.numel() for p in encoder.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) == 90_296_576
    assert abs(count / 90.3e6 - 1) < 0.05


def _check_against_reference(config, size):
    reference = _reference_unet(2, config).double()
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    ours = ResidualEncoder(2, **config).double()
    ours.load_state_dict(_encoder_state(reference), strict=True)
    sizes = (size, size, size) if isinstance(size, int) else tuple(size)
    x = torch.randn(1, 2, *sizes, dtype=torch.float64)
    with torch.no_grad():
        for mine, theirs in zip(ours(x), reference.encoder(x), strict=True):
            torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)


def test_released_nnssl_encoder_weights_load_by_stripping_the_prefix():
    _check_against_reference(TINY, 16)


@pytest.mark.slow
def test_resenc_l_matches_reference():
    _check_against_reference(PAPER, 64)


# Anisotropic data (0.8 × 0.8 × 2.5 mm): z is neither pooled nor convolved until its spacing is close.
ANISOTROPIC = dict(
    features=[8, 16, 32, 32],
    strides=[1, [2, 2, 1], 2, [2, 2, 1]],
    kernel_sizes=[[3, 3, 1], [3, 3, 1], 3, 3],
    blocks_per_stage=[1, 2, 1, 2],
)


def test_anisotropic_encoder_matches_reference():
    _check_against_reference(ANISOTROPIC, (16, 16, 8))


def test_anisotropic_shapes_follow_per_axis_feature_info():
    encoder = ResidualEncoder(1, **ANISOTROPIC)
    assert [level["stride"] for level in encoder.feature_info] == [1, (2, 2, 1), (4, 4, 2), (8, 8, 2)]
    assert encoder.stem.convs[0].conv.weight.shape[2:] == (3, 3, 1)
    with torch.no_grad():
        features = encoder(torch.randn(1, 1, 16, 16, 8))
    expected = [(16, 16, 8), (8, 8, 8), (4, 4, 4), (2, 2, 4)]
    assert [tuple(f.shape[2:]) for f in features] == expected
