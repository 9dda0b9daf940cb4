from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.box_utils import box_iou

from shared.boxes.ops import (
    batched_pairwise_iou_3d,
    box_volumes,
    cccwhd_to_xyzxyz,
    pairwise_iou_3d,
    xyzxyz_to_cccwhd,
)


def test_conversion_round_trip_and_values(rng):
    boxes = np.concatenate([rng.uniform(-50, 50, (7, 3)), rng.uniform(0, 9, (7, 3))], axis=1)
    corners = cccwhd_to_xyzxyz(boxes)
    np.testing.assert_allclose(corners[:, 3:] - corners[:, :3], boxes[:, 3:])
    np.testing.assert_allclose(xyzxyz_to_cccwhd(corners), boxes, atol=1e-12)
    np.testing.assert_array_equal(cccwhd_to_xyzxyz([[1, 2, 3, 2, 4, 6]]), [[0, 0, 0, 2, 4, 6]])


def test_iou_hand_values():
    unit = np.array([[0, 0, 0, 2, 2, 2.0]])
    half_shifted = np.array([[1, 0, 0, 3, 2, 2.0]])  # intersection 4, union 12
    assert pairwise_iou_3d(unit, half_shifted)[0, 0] == pytest.approx(1 / 3)
    assert pairwise_iou_3d(unit, unit)[0, 0] == 1.0
    assert pairwise_iou_3d(unit, [[5, 5, 5, 6, 6, 6]])[0, 0] == 0.0


def test_iou_zero_size_boxes_give_zero():
    flat = np.array([[1, 1, 1, 1, 3, 3.0]])
    point = np.array([[1, 1, 1, 1, 1, 1.0]])
    assert pairwise_iou_3d(flat, flat)[0, 0] == 0.0
    assert pairwise_iou_3d(point, point)[0, 0] == 0.0
    assert box_volumes(flat)[0] == 0.0


def test_iou_matches_monai(rng):
    first = cccwhd_to_xyzxyz(np.concatenate([rng.uniform(0, 10, (9, 3)), rng.uniform(1, 8, (9, 3))], axis=1))
    second = cccwhd_to_xyzxyz(np.concatenate([rng.uniform(0, 10, (5, 3)), rng.uniform(1, 8, (5, 3))], axis=1))
    ours = pairwise_iou_3d(first, second)
    reference = box_iou(torch.as_tensor(first), torch.as_tensor(second)).numpy()
    assert ours.shape == (9, 5) and (ours > 0).any()
    np.testing.assert_allclose(ours, reference, atol=1e-6)  # MONAI computes in float32 with an epsilon


def test_shapes_and_batches(rng):
    assert pairwise_iou_3d(np.zeros((0, 6)), np.ones((3, 6))).shape == (0, 3)
    first = cccwhd_to_xyzxyz(np.concatenate([rng.uniform(0, 5, (4, 3)), rng.uniform(1, 4, (4, 3))], axis=1))
    second = cccwhd_to_xyzxyz(np.concatenate([rng.uniform(0, 5, (3, 3)), rng.uniform(1, 4, (3, 3))], axis=1))
    batched = batched_pairwise_iou_3d(np.stack([first, first[::-1]]), np.stack([second, second]))
    np.testing.assert_array_equal(batched[0], pairwise_iou_3d(first, second))
    np.testing.assert_array_equal(batched[1], pairwise_iou_3d(first[::-1], second))
    with pytest.raises(ValueError, match="shape"):
        pairwise_iou_3d(np.zeros((2, 4)), np.zeros((1, 6)))
