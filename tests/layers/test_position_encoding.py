import math

import pytest
import torch

from shared.layers.position_encoding import axis_channels, sine_coordinate_embedding, sine_position_encoding


def test_axis_channels_are_even_and_sum_up():
    assert axis_channels(128) == [44, 42, 42]
    assert axis_channels(96) == [32, 32, 32]
    assert axis_channels(32) == [12, 10, 10]
    with pytest.raises(ValueError, match="even"):
        axis_channels(127)


def test_coordinate_embedding_formula():
    coordinates = torch.tensor([[0.25, 0.5]])
    embedding = sine_coordinate_embedding(coordinates, 4, temperature=100.0)
    assert embedding.shape == (1, 8)
    expected = []
    for t in (0.25, 0.5):
        for i in range(2):
            angle = 2 * math.pi * t / 100.0 ** (2 * i / 4)
            expected += [math.sin(angle), math.cos(angle)]
    torch.testing.assert_close(embedding[0], torch.tensor(expected), atol=1e-6, rtol=0)


def test_position_encoding_reads_each_axis_from_voxel_centres():
    encoding = sine_position_encoding((4, 2, 8), 32)
    assert encoding.shape == (32, 4, 2, 8)
    x, y, z = 3, 1, 5
    expected = torch.cat([sine_coordinate_embedding(torch.tensor([(x + 0.5) / 4]), 12),
                          sine_coordinate_embedding(torch.tensor([(y + 0.5) / 2]), 10),
                          sine_coordinate_embedding(torch.tensor([(z + 0.5) / 8]), 10)])
    torch.testing.assert_close(encoding[:, x, y, z], expected)
    assert not torch.equal(encoding[:, 0, 0, 0], encoding[:, 0, 0, 1])
