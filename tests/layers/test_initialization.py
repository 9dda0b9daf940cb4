import math

import pytest
import torch
from torch import nn

from shared.layers import initialize_head_normal, initialize_kaiming


def test_kaiming_std_and_zero_bias():
    torch.manual_seed(0)
    conv = nn.Conv3d(64, 64, 3)
    initialize_kaiming(conv, negative_slope=0.01)
    expected = math.sqrt(2.0 / (1 + 0.01**2)) / math.sqrt(64 * 27)
    assert abs(conv.weight.std().item() - expected) / expected < 0.02
    assert torch.count_nonzero(conv.bias) == 0


def test_head_prior_bias_gives_sigmoid_prior():
    head = nn.Sequential(nn.Conv3d(8, 8, 3), nn.Conv3d(8, 4, 3))
    initialize_head_normal(head)
    initialize_head_normal(head[1], prior_probability=0.01)
    assert abs(head[0].weight.std().item() - 0.01) < 0.002
    torch.testing.assert_close(torch.sigmoid(head[1].bias), torch.full((4,), 0.01))
    assert head[1].bias[0].item() == pytest.approx(-math.log(99.0))
    with pytest.raises(ValueError, match="prior_probability"):
        initialize_head_normal(head[1], prior_probability=1.5)
