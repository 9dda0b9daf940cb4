from __future__ import annotations

import math

import pytest
import torch

from shared.detectors.box_coder import BoxCoder


def _random_boxes(generator, count):
    low = torch.rand(count, 3, generator=generator, dtype=torch.float64) * 100
    return torch.cat([low, low + 0.5 + torch.rand(count, 3, generator=generator, dtype=torch.float64) * 40], dim=1)


@pytest.mark.parametrize("weights", [(1.0,) * 6, (10.0, 10.0, 10.0, 5.0, 5.0, 5.0)])
def test_encode_decode_round_trip_float64(weights):
    generator = torch.Generator().manual_seed(0)
    boxes, anchors = _random_boxes(generator, 200), _random_boxes(generator, 200)
    coder = BoxCoder(weights=weights)
    decoded = coder.decode(coder.encode(boxes, anchors), anchors)
    assert decoded.dtype == torch.float64
    torch.testing.assert_close(decoded, boxes, atol=1e-6, rtol=0)


def test_encode_golden_values():
    anchor = torch.tensor([[0.0, 0, 0, 4, 4, 2]], dtype=torch.float64)
    coder = BoxCoder()
    torch.testing.assert_close(coder.encode(anchor, anchor), torch.zeros(1, 6, dtype=torch.float64))
    shifted_and_doubled = torch.tensor([[0.0, -2, 0, 8, 6, 2]], dtype=torch.float64)  # centre (4, 2, 1), size (8, 8, 2)
    expected = torch.tensor([[0.5, 0.0, 0.0, math.log(2), math.log(2), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(coder.encode(shifted_and_doubled, anchor), expected)
    weighted = BoxCoder(weights=(2, 2, 2, 3, 3, 3)).encode(shifted_and_doubled, anchor)
    torch.testing.assert_close(weighted, expected * torch.tensor([2.0, 2, 2, 3, 3, 3], dtype=torch.float64))


def test_decode_clips_huge_size_deltas():
    anchor = torch.tensor([[0.0, 0, 0, 1, 1, 1]])
    boxes = BoxCoder(size_clip=1.0).decode(torch.tensor([[0.0, 0, 0, 100, 0, 0]]), anchor)
    assert torch.isfinite(boxes).all()
    torch.testing.assert_close(boxes[0, 3] - boxes[0, 0], torch.tensor(math.e))


def test_weights_need_six_values():
    with pytest.raises(ValueError, match="6 values"):
        BoxCoder(weights=(1, 1, 1, 1))
