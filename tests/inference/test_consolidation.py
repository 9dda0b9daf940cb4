from __future__ import annotations

import math

import pytest
import torch

from shared.inference.consolidation import tile_position_weights, tiles_covering, weighted_box_clustering

BOX = [0.0, 0, 0, 10, 10, 10]


def _wbc(boxes, scores, labels=None, weights=None, expected=None, **kwargs):
    boxes = torch.tensor(boxes, dtype=torch.float64)
    n = len(boxes)
    return weighted_box_clustering(
        boxes,
        torch.tensor(scores, dtype=torch.float64),
        torch.zeros(n, dtype=torch.long) if labels is None else torch.tensor(labels),
        torch.ones(n, dtype=torch.float64) if weights is None else torch.tensor(weights, dtype=torch.float64),
        torch.full((n,), n) if expected is None else torch.tensor(expected),
        **kwargs,
    )


def test_identical_boxes_merge_with_the_mean_score():
    boxes, scores, labels = _wbc([BOX, BOX], [0.8, 0.6])
    torch.testing.assert_close(boxes, torch.tensor([BOX], dtype=torch.float64))
    torch.testing.assert_close(scores, torch.tensor([0.7], dtype=torch.float64))
    assert labels.tolist() == [0]


def test_missing_predictions_damp_the_score():
    # 2 found out of 4 expected: (0.8 + 0.6) / (2 + 2 · 1)
    _, scores, _ = _wbc([BOX, BOX], [0.8, 0.6], expected=[4, 4])
    torch.testing.assert_close(scores, torch.tensor([0.35], dtype=torch.float64))
    _, undamped, _ = _wbc([BOX, BOX], [0.8, 0.6], expected=[4, 4], missing_weight=0.0)
    torch.testing.assert_close(undamped, torch.tensor([0.7], dtype=torch.float64))


def test_coordinates_are_score_weight_and_iou_weighted():
    shifted = [1.0, 0, 0, 11, 10, 10]  # IoU 9/11 with BOX
    boxes, scores, _ = _wbc([BOX, shifted], [0.9, 0.3], weights=[1.0, 0.5])
    w_seed, w_other = 1.0 * 1.0 * 0.9, (9 / 11) * 0.5 * 0.3
    x1 = (0 * w_seed + 1 * w_other) / (w_seed + w_other)
    torch.testing.assert_close(boxes[0, 0], torch.tensor(x1, dtype=torch.float64))
    torch.testing.assert_close(boxes[0, 3], torch.tensor(10 + x1, dtype=torch.float64))
    expected_score = (w_seed + w_other) / (1.0 + (9 / 11) * 0.5)
    torch.testing.assert_close(scores[0], torch.tensor(expected_score, dtype=torch.float64))


def test_classes_and_distant_boxes_stay_apart():
    far = [50.0, 50, 50, 60, 60, 60]
    boxes, scores, labels = _wbc([BOX, BOX, far], [0.5, 0.9, 0.7], labels=[0, 1, 0], expected=[1, 1, 1])
    assert len(boxes) == 3
    assert labels.tolist() == [1, 0, 0] and scores.tolist() == [0.9, 0.7, 0.5]


def test_empty_input():
    boxes, scores, labels = weighted_box_clustering(
        torch.zeros(0, 6), torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0)
    )
    assert boxes.shape == (0, 6) and scores.shape == (0,) and labels.shape == (0,)


def test_tile_position_weights_golden():
    boxes = torch.tensor([[12.0, 12, 12, 20, 20, 20], [-2.0, 14, 14, 2, 18, 18]])
    weights = tile_position_weights(boxes, (32, 32, 32), sigma_scale=0.25)
    torch.testing.assert_close(weights, torch.tensor([1.0, math.exp(-2.0)]))


def test_tiles_covering_counts_tiles_containing_the_centre():
    origins = torch.tensor([[0, 0, 0], [16, 0, 0], [32, 0, 0]])
    points = torch.tensor([[8.0, 5, 5], [20.0, 5, 5], [40.0, 5, 5], [20.0, 40, 5]])
    assert tiles_covering(points, origins, (32, 32, 32)).tolist() == [1, 2, 2, 0]


def _reference_wbc_one_class(boxes, scores, weights, expected, iou_threshold):
    """The plain greedy formulation (full IoU matrix, pool in score order) the fast version must equal."""
    from shared.boxes.nms import box_iou

    ious, pool, out_boxes, out_scores = box_iou(boxes, boxes), scores.argsort(descending=True, stable=True), [], []
    while pool.numel():
        seed_ious = ious[pool[0], pool]
        in_cluster = seed_ious > iou_threshold
        in_cluster[0] = True
        members = pool[in_cluster]
        match = seed_ious[in_cluster] * weights[members]
        missing = (expected[members].float().mean() - members.numel()).clamp(min=0)
        out_scores.append((match * scores[members]).sum() / (match.sum() + missing * match.mean()))
        out_boxes.append((boxes[members] * (match * scores[members] / (match * scores[members]).sum())[:, None]).sum(0))
        pool = pool[~in_cluster]
    order = torch.stack(out_scores).argsort(descending=True, stable=True)
    return torch.stack(out_boxes)[order], torch.stack(out_scores)[order]


@pytest.mark.parametrize("iou_threshold", [0.1, 0.5])
def test_wbc_equals_the_plain_greedy_formulation_on_many_boxes(iou_threshold):
    generator = torch.Generator().manual_seed(3)
    low = torch.rand(600, 3, generator=generator) * 30
    boxes = torch.cat([low, low + 2 + torch.rand(600, 3, generator=generator) * 8], 1)
    scores, weights = torch.rand(600, generator=generator), torch.rand(600, generator=generator)
    expected = torch.randint(1, 8, (600,), generator=generator)
    labels = torch.zeros(600, dtype=torch.int64)
    found_boxes, found_scores, _ = weighted_box_clustering(boxes, scores, labels, weights, expected,
                                                           iou_threshold=iou_threshold)
    reference_boxes, reference_scores = _reference_wbc_one_class(boxes, scores, weights, expected, iou_threshold)
    assert 40 < len(found_boxes) < 600
    torch.testing.assert_close(found_boxes, reference_boxes, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(found_scores, reference_scores, atol=1e-6, rtol=1e-5)
