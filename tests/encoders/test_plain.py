import pytest
import torch

from shared.encoders import PlainConvEncoder, build_encoder


def _weighted_sum(outputs):
    generator = torch.Generator().manual_seed(1)
    return sum((o * torch.randn(o.shape, generator=generator, dtype=o.dtype)).sum() for o in outputs)


@pytest.mark.parametrize("preset, size", [("tiny", 32), ("small", 64)])
def test_shapes_follow_feature_info(preset, size):
    encoder = build_encoder({"name": "plain", "preset": preset}, 2)
    with torch.no_grad():
        features = encoder(torch.randn(1, 2, size, size, size))
    assert len(features) == len(encoder.feature_info)
    for feature, level in zip(features, encoder.feature_info):
        side = size // level["stride"]
        assert feature.shape == (1, level["channels"], side, side, side)


def test_feature_info_is_cumulative():
    encoder = PlainConvEncoder(1, features=[4, 8, 8], strides=[1, 2, 2], convs_per_stage=1)
    assert encoder.feature_info == [{"channels": 4, "stride": 1}, {"channels": 8, "stride": 2}, {"channels": 8, "stride": 4}]
    assert encoder.in_channels == 1 and encoder.stem_keys == ("stages.0.0.convs.0.",)
    assert all(any(k.startswith(p) for k in encoder.state_dict()) for p in encoder.stem_keys)


def test_gradients_reach_every_parameter():
    encoder = build_encoder({"name": "plain", "preset": "tiny"}, 1)
    _weighted_sum(encoder(torch.randn(2, 1, 16, 16, 16))).backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_paper_size_from_the_layer_formula():
    encoder = build_encoder({"name": "plain", "preset": "paper"}, 1)
    widths, expected, previous = [32, 64, 128, 256, 320, 320], 0, 1
    for width in widths:
        # two 3×3×3 convs with bias, each followed by an affine instance norm
        expected += (27 * previous * width + width) + (27 * width * width + width) + 4 * width
        previous = width
    assert sum(p.numel() for p in encoder.parameters()) == expected


def test_wrong_input_channels_and_list_lengths_raise():
    encoder = PlainConvEncoder(2, features=[4, 8], strides=[1, 2])
    with pytest.raises(ValueError, match="built for 2 input channel.*has 3"):
        encoder(torch.randn(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="expects a"):
        encoder(torch.randn(2, 8, 8, 8))
    with pytest.raises(ValueError, match="convs_per_stage has 3 entries"):
        PlainConvEncoder(1, features=[4, 8], strides=[1, 2], convs_per_stage=[1, 2, 2])


def test_matches_dynamic_network_architectures_plain_conv_encoder():
    plain = pytest.importorskip("dynamic_network_architectures.building_blocks.plain_conv_encoder")
    reference = plain.PlainConvEncoder(
        2, 4, [8, 16, 32, 32], torch.nn.Conv3d, 3, [1, 2, 2, 2], [2, 2, 1, 2], True,
        torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU,
        {"negative_slope": 0.01}, return_skips=True,
    ).double()
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    ours = PlainConvEncoder(2, features=[8, 16, 32, 32], strides=[1, 2, 2, 2], convs_per_stage=[2, 2, 1, 2]).double()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 2, 16, 16, 16, dtype=torch.float64)
    for mine, theirs in zip(ours(x), reference(x), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)


def test_anisotropic_config_matches_dynamic_network_architectures():
    plain = pytest.importorskip("dynamic_network_architectures.building_blocks.plain_conv_encoder")
    strides, kernels = [1, [2, 2, 1], [2, 2, 2]], [[3, 3, 1], [3, 3, 1], 3]
    reference = plain.PlainConvEncoder(
        1, 3, [4, 8, 8], torch.nn.Conv3d, kernels, strides, 2, True, torch.nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"negative_slope": 0.01}, return_skips=True,
    ).double()
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    ours = PlainConvEncoder(1, features=[4, 8, 8], strides=strides, kernel_sizes=kernels).double()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert ours.feature_info == [{"channels": 4, "stride": 1}, {"channels": 8, "stride": (2, 2, 1)},
                                 {"channels": 8, "stride": (4, 4, 2)}]
    x = torch.randn(1, 1, 8, 8, 4, dtype=torch.float64)
    outputs = ours(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(8, 8, 4), (4, 4, 4), (2, 2, 2)]
    for mine, theirs in zip(outputs, reference(x), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)


def test_isotropic_per_axis_lists_give_the_same_keys_and_shapes_as_scalars():
    scalar = PlainConvEncoder(1, features=[4, 8], strides=[1, 2], kernel_sizes=3)
    lists = PlainConvEncoder(1, features=[4, 8], strides=[[1, 1, 1], [2, 2, 2]], kernel_sizes=[[3, 3, 3]] * 2)
    assert {k: v.shape for k, v in scalar.state_dict().items()} == {k: v.shape for k, v in lists.state_dict().items()}
    assert lists.feature_info == scalar.feature_info == [{"channels": 4, "stride": 1}, {"channels": 8, "stride": 2}]


def test_per_axis_entries_of_the_wrong_length_are_named():
    with pytest.raises(ValueError, match=r"strides\[1\]: expected a positive integer or 3"):
        PlainConvEncoder(1, features=[4, 8], strides=[1, [2, 2]])
    with pytest.raises(ValueError, match=r"kernel_sizes has 3 entries"):
        PlainConvEncoder(1, features=[4, 8], strides=[1, 2], kernel_sizes=[3, 3, 1])
