import numpy as np
import pytest
from monai.data.box_utils import convert_box_mode

from shared.boxes.convention import (boxes_from_instance_mask, boxes_voxel_to_world, boxes_world_to_voxel, empty_boxes,
                                     points_voxel_to_world, points_world_to_voxel)


def test_one_voxel_object_has_width_one():
    mask = np.zeros((5, 6, 7), dtype=np.int16)
    mask[2, 3, 4] = 7
    boxes, ids = boxes_from_instance_mask(mask)
    np.testing.assert_array_equal(boxes, [[2, 3, 4, 3, 4, 5]])
    assert ids.tolist() == [7]


def test_boxes_from_mask_sorted_by_id_and_channel_axis_accepted():
    mask = np.zeros((1, 8, 8, 8), dtype=np.int32)
    mask[0, 5:7, 0:2, 1:4] = 9
    mask[0, 0:3, 2:5, 6:8] = 2
    boxes, ids = boxes_from_instance_mask(mask)
    assert ids.tolist() == [2, 9]
    np.testing.assert_array_equal(boxes, [[0, 2, 6, 3, 5, 8], [5, 0, 1, 7, 2, 4]])


def test_empty_mask_gives_empty_boxes():
    boxes, ids = boxes_from_instance_mask(np.zeros((3, 3, 3)))
    assert boxes.shape == (0, 6) and ids.shape == (0,)
    assert empty_boxes().shape == (0, 6)
    assert boxes_voxel_to_world(boxes, np.eye(4)).shape == (0, 6)
    assert boxes_world_to_voxel([], np.eye(4)).shape == (0, 6)


def test_mask_must_be_3d():
    with pytest.raises(ValueError):
        boxes_from_instance_mask(np.zeros((3, 3)))


def test_half_voxel_convention_by_hand():
    # spacing 2 mm, origin (RAS) at 10, 20, 30: voxel 0's centre is there, its border 1 mm before
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    world = boxes_voxel_to_world(np.array([[0, 0, 0, 1, 1, 1]]), affine)
    # centre x RAS 10 → LPS -10, y RAS 20 → -20, z 30; one voxel = 2 mm wide
    np.testing.assert_allclose(world, [[-10, -20, 30, 2, 2, 2]])


def test_world_voxel_round_trip_oblique_flipped(rng):
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, -0.8, 1.25])
    affine[:3, 3] = [-100, 50, 20]
    # an axis-aligned flip keeps boxes boxes, so the round trip is exact
    flipped = np.diag([-0.7, 0.8, 1.25, 1.0])
    boxes = np.array([[1, 2, 3, 4, 6, 9], [0, 0, 0, 1, 1, 1]], dtype=np.float32)
    np.testing.assert_allclose(boxes_world_to_voxel(boxes_voxel_to_world(boxes, flipped), flipped), boxes, atol=1e-5)
    points = rng.uniform(0, 10, size=(5, 3))
    np.testing.assert_allclose(points_world_to_voxel(points_voxel_to_world(points, affine), affine), points, atol=1e-9)


def test_world_box_matches_monai_corner_transform():
    affine = np.diag([0.7, 0.7, 1.25, 1.0])
    affine[:3, 3] = [-180.0, -150.0, -300.0]
    boxes = np.array([[10, 20, 30, 15, 26, 33]], dtype=np.float64)
    world = boxes_voxel_to_world(boxes, affine)
    corners = np.asarray(convert_box_mode(world, src_mode="cccwhd", dst_mode="xyzxyz"))
    # LPS x of the low index edge: -(origin + (index - 0.5) * spacing)
    assert corners[0, 3] == pytest.approx(-(-180.0 + (10 - 0.5) * 0.7))
    assert world[0, 3:].tolist() == pytest.approx([5 * 0.7, 6 * 0.7, 3 * 1.25])
