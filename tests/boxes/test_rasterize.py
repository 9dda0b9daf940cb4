import numpy as np
import pytest

from shared.boxes.convention import boxes_from_instance_mask
from shared.boxes.rasterize import box_slices, rasterize_boxes


def test_mask_box_mask_round_trip():
    mask = np.zeros((10, 9, 8), dtype=np.int16)
    mask[1:4, 2:7, 0:1] = 1
    mask[6:10, 0:2, 3:8] = 2
    boxes, ids = boxes_from_instance_mask(mask)
    np.testing.assert_array_equal(rasterize_boxes(boxes, mask.shape, ids=ids), mask)


def test_small_box_inside_large_stays_visible_and_clipping():
    boxes = np.array([[2, 2, 2, 3, 3, 3], [0, 0, 0, 6, 6, 6], [4.6, 4.6, 4.6, 9.0, 9.0, 9.0]])
    painted = rasterize_boxes(boxes, (6, 6, 6))
    assert painted[2, 2, 2] == 1 and painted[0, 0, 0] == 2
    assert box_slices(boxes[2], (6, 6, 6)) == (slice(5, 6),) * 3
    assert box_slices([3.2, 3.2, 3.2, 3.3, 3.3, 3.3], (6, 6, 6)) == (slice(3, 4),) * 3  # at least one voxel


def test_box_outside_the_grid_paints_nothing():
    assert box_slices([7, 0, 0, 9, 2, 2], (5, 5, 5)) is None
    assert not rasterize_boxes(np.array([[7, 0, 0, 9, 2, 2], [-3, 0, 0, -1, 2, 2]]), (5, 5, 5)).any()


def test_voxel_belongs_to_box_when_its_centre_is_inside():
    # centres 2.5, 3.5, 4.5 lie in [2.3, 4.6]; a sub-voxel box marks the voxel holding its centre.
    assert box_slices([2.3, 0, 0, 4.6, 1, 1], (8, 1, 1))[0] == slice(2, 5)
    assert box_slices([2.6, 0, 0, 2.9, 1, 1], (5, 1, 1))[0] == slice(2, 3)


def test_integer_box_marks_exactly_its_voxels_with_its_id():
    # the segmentation target of boxes-only data: class + 1 as the id
    target = rasterize_boxes(np.array([[1, 2, 3, 4, 5, 6]]), (6, 7, 8), ids=np.array([2]) + 1, dtype=np.int64)
    expected = np.zeros((6, 7, 8), dtype=np.int64)
    expected[1:4, 2:5, 3:6] = 3
    np.testing.assert_array_equal(target, expected)


def test_no_boxes_give_background_and_ids_must_match_boxes():
    assert not rasterize_boxes(np.zeros((0, 6)), (3, 3, 3), ids=np.zeros(0, dtype=np.int64)).any()
    with pytest.raises(ValueError, match="2 boxes but 1 ids"):
        rasterize_boxes(np.zeros((2, 6)), (3, 3, 3), ids=[1])
