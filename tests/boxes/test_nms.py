from __future__ import annotations

import torch
from monai.data import box_utils

from shared.boxes.nms import batched_nms, box_iou, nms


def _random_boxes(generator, count, dtype=torch.float64):
    low = torch.rand(count, 3, generator=generator, dtype=dtype) * 40
    return torch.cat([low, low + 1 + torch.rand(count, 3, generator=generator, dtype=dtype) * 20], dim=1)


def test_box_iou_golden_and_against_monai():
    a = torch.tensor([[0.0, 0, 0, 2, 2, 2]])
    b = torch.tensor([[1.0, 0, 0, 3, 2, 2], [5.0, 5, 5, 6, 6, 6], [0.0, 0, 0, 2, 2, 2]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[4 / 12, 0.0, 1.0]]))
    generator = torch.Generator().manual_seed(0)
    boxes1, boxes2 = _random_boxes(generator, 30), _random_boxes(generator, 20)
    ours = box_iou(boxes1, boxes2)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, box_utils.box_iou(boxes1, boxes2), atol=1e-6, rtol=0)


def test_degenerate_boxes_have_zero_iou():
    flat = torch.tensor([[1.0, 1, 1, 1, 3, 3]])
    assert box_iou(flat, flat).item() == 0.0


def test_nms_matches_monai_on_random_boxes():
    generator = torch.Generator().manual_seed(1)
    boxes = _random_boxes(generator, 300, dtype=torch.float32)
    scores = torch.rand(300, generator=generator)
    labels = torch.randint(0, 3, (300,), generator=generator)
    for threshold in (0.1, 0.3, 0.6):
        expected_plain = box_utils.non_max_suppression(boxes, scores, threshold)
        torch.testing.assert_close(nms(boxes, scores, threshold), expected_plain)
        expected = box_utils.batched_nms(boxes, scores, labels, threshold)
        torch.testing.assert_close(batched_nms(boxes, scores, labels, threshold), expected)


def test_nms_golden_and_empty():
    boxes = torch.tensor([[0.0, 0, 0, 2, 2, 2], [0.0, 0, 0, 2, 2, 2.2], [10.0, 0, 0, 12, 2, 2]])
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [1, 2, 0]
    assert nms(torch.zeros(0, 6), torch.zeros(0), 0.5).shape == (0,)


def test_nms_max_keep_is_the_truncated_full_result():
    generator = torch.Generator().manual_seed(1)
    boxes = _random_boxes(generator, 400, dtype=torch.float32)
    scores = torch.rand(400, generator=generator)
    scores[:50] = 0.5  # ties keep the earlier box in both paths
    labels = torch.randint(0, 3, (400,), generator=generator)
    for threshold in (0.03, 0.1):
        full = batched_nms(boxes, scores, labels, threshold)
        assert 20 < len(full) < 400
        for limit in (1, 20, len(full) - 1, len(full), 1000):
            torch.testing.assert_close(batched_nms(boxes, scores, labels, threshold, max_keep=limit), full[:limit])
    assert nms(boxes[:0], scores[:0], 0.5, max_keep=3).shape == (0,)
