from __future__ import annotations

import numpy as np
import pytest

from shared.boxes.convention import boxes_from_instance_mask
from shared.data.rasterize import rasterize_boxes, rasterize_instances


def test_integer_box_marks_exactly_its_voxels():
    target = rasterize_boxes(np.array([[1, 2, 3, 4, 5, 6]]), np.array([2]), (6, 7, 8))
    expected = np.zeros((6, 7, 8), dtype=np.int64)
    expected[1:4, 2:5, 3:6] = 3
    np.testing.assert_array_equal(target, expected)


def test_mask_box_round_trip(rng):
    mask = np.zeros((9, 9, 9), dtype=np.int64)
    mask[2:5, 1:7, 3:4] = 1
    boxes, _ = boxes_from_instance_mask(mask)
    np.testing.assert_array_equal(rasterize_boxes(boxes, [0], mask.shape), mask)


def test_smaller_box_wins_where_boxes_overlap():
    boxes = np.array([[2, 2, 2, 4, 4, 4], [0, 0, 0, 6, 6, 6]], dtype=np.float32)
    target = rasterize_boxes(boxes, np.array([1, 0]), (6, 6, 6))
    assert (target[2:4, 2:4, 2:4] == 2).all()
    assert (target == 1).sum() == 6**3 - 2**3


def test_boxes_outside_or_empty_give_background():
    assert not rasterize_boxes(np.array([[7, 0, 0, 9, 2, 2]]), np.array([0]), (5, 5, 5)).any()
    assert not rasterize_boxes(np.zeros((0, 6)), np.zeros(0), (3, 3, 3)).any()
    with pytest.raises(ValueError, match="labels"):
        rasterize_boxes(np.zeros((2, 6)), np.zeros(1), (3, 3, 3))


def test_instances_become_class_plus_one(rng):
    instance_map = rng.integers(0, 4, size=(5, 6, 7))
    target = rasterize_instances(instance_map, np.array([1, 2, 3]), np.array([0, 4, 1]))
    np.testing.assert_array_equal(target, np.array([0, 1, 5, 2])[instance_map])
    assert not rasterize_instances(instance_map, np.zeros(0), np.zeros(0)).any()
