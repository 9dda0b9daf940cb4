import pytest
import torch

from shared.layers import ConvNormAct, StackedConvBlocks


def test_conv_norm_act_shapes_and_keys():
    block = ConvNormAct(2, 5, 3, stride=2)
    assert block(torch.randn(1, 2, 9, 8, 6)).shape == (1, 5, 5, 4, 3)
    assert sorted(block.state_dict()) == ["conv.bias", "conv.weight", "norm.bias", "norm.weight"]
    bare = ConvNormAct(2, 5, 1, norm=None, act=None, bias=False)
    assert sorted(bare.state_dict()) == ["conv.weight"]
    x = torch.randn(1, 2, 4, 4, 4)
    torch.testing.assert_close(bare(x), torch.nn.functional.conv3d(x, bare.conv.weight))


def test_stacked_blocks_only_first_is_strided():
    stack = StackedConvBlocks(3, 1, 4, stride=2)
    assert [tuple(b.conv.stride) for b in stack.convs] == [(2, 2, 2), (1, 1, 1), (1, 1, 1)]
    assert stack(torch.randn(2, 1, 8, 8, 8)).shape == (2, 4, 4, 4, 4)
    with pytest.raises(ValueError, match="num_convs"):
        StackedConvBlocks(0, 1, 4)


def test_matches_dynamic_network_architectures_block_and_drops_its_alias_keys():
    blocks = pytest.importorskip("dynamic_network_architectures.building_blocks.simple_conv_blocks")
    reference = blocks.StackedConvBlocks(
        2, torch.nn.Conv3d, 3, 6, 3, 2, True, torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True},
        None, None, torch.nn.LeakyReLU, {"negative_slope": 0.01},
    ).double()
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    state = reference.state_dict()
    assert any("all_modules" in key for key in state)
    ours = StackedConvBlocks(2, 3, 6, 3, stride=2).double()
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 10, 8, 6, dtype=torch.float64)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-6, rtol=0)
