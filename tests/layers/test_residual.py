import pytest
import torch

from shared.layers import BasicResidualBlock, StackedResidualBlocks


def test_skip_is_identity_pool_or_pool_plus_projection():
    assert len(BasicResidualBlock(4, 4).skip) == 0
    pooled = BasicResidualBlock(4, 4, stride=2).skip
    assert [type(m).__name__ for m in pooled] == ["AvgPool3d"]
    projected = BasicResidualBlock(4, 8, stride=2)
    assert [type(m).__name__ for m in projected.skip] == ["AvgPool3d", "ConvNormAct"]
    # ResNet-D: the projection is a bias-free 1×1 conv after the pooling, keyed `skip.1`.
    assert "skip.1.conv.weight" in projected.state_dict() and "skip.1.conv.bias" not in projected.state_dict()
    assert projected(torch.randn(1, 4, 8, 6, 4)).shape == (1, 8, 4, 3, 2)


def test_identity_block_adds_its_input():
    block = BasicResidualBlock(3, 3, act=None).double()
    torch.nn.init.zeros_(block.conv2.norm.weight)
    torch.nn.init.zeros_(block.conv2.norm.bias)
    x = torch.randn(1, 3, 4, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("in_channels, out_channels, stride", [(3, 6, 2), (6, 6, 1), (6, 6, 2), (3, 6, 1)])
def test_matches_dynamic_network_architectures_basic_block_d(in_channels, out_channels, stride):
    residual = pytest.importorskip("dynamic_network_architectures.building_blocks.residual")
    reference = residual.StackedResidualBlocks(
        2, torch.nn.Conv3d, in_channels, out_channels, 3, stride, True, torch.nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"negative_slope": 0.01},
    ).double()
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    ours = StackedResidualBlocks(2, in_channels, out_channels, 3, stride=stride).double()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, in_channels, 8, 6, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-6, rtol=0)
