from __future__ import annotations

import numpy as np
import pytest

from shared.boxes.convention import boxes_from_instance_mask
from shared.data.augment import extract_patch, rotation_matrix, transform_boxes
from shared.data.sampling import read_region



def _instances(rng, shape=(14, 12, 10)):
    instance_map = np.zeros(shape, dtype=np.int16)
    instance_map[2:5, 3:9, 1:4] = 1
    instance_map[8:13, 1:4, 5:9] = 2
    instance_map[9, 4, 6] = 2
    image = rng.normal(size=(2,) + shape).astype(np.float32)
    return image, instance_map


def test_rotation_matrix_is_a_proper_rotation(rng):
    matrix = rotation_matrix(rng.uniform(-1, 1, size=3))
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(matrix) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation_matrix([0, 0, np.pi / 2]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


def test_identity_is_an_exact_crop_and_mirroring_twice_is_identity(rng):
    image, instance_map = _instances(rng)
    origin, size = np.array([1, -2, 3]), (8, 8, 8)
    patch, map_patch = extract_patch(image, instance_map, origin, size)
    np.testing.assert_array_equal(patch.numpy(), read_region(image, origin, origin + size))
    np.testing.assert_array_equal(map_patch, read_region(instance_map, origin, origin + size))
    mirror = np.diag([-1.0, 1.0, -1.0])
    once, map_once = extract_patch(image, instance_map, origin, size, mirror)
    np.testing.assert_array_equal(once.numpy(), np.flip(patch.numpy(), axis=(1, 3)))
    twice, map_twice = extract_patch(once.numpy(), map_once, np.zeros(3, int), size, mirror)
    np.testing.assert_array_equal(twice.numpy(), patch.numpy())
    np.testing.assert_array_equal(map_twice, map_patch)


@pytest.mark.parametrize("signs", [(-1, 1, 1), (1, -1, 1), (1, 1, -1), (-1, -1, -1)])
def test_boxes_follow_mirroring_exactly(rng, signs):
    image, instance_map = _instances(rng)
    origin, size, mirror = np.array([0, 1, -1]), (14, 10, 12), np.diag(np.array(signs, float))
    boxes, _ = boxes_from_instance_mask(instance_map)
    _, map_patch = extract_patch(image, instance_map, origin, size, mirror)
    moved = transform_boxes(boxes, origin, size, mirror)
    np.testing.assert_array_equal(moved, boxes_from_instance_mask(map_patch)[0])
    np.testing.assert_array_equal(transform_boxes(moved, np.zeros(3), size, mirror), boxes - np.tile(origin, 2))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_quarter_turn_by_the_affine_path_matches_rot90(rng, axis):
    image, instance_map = _instances(rng, shape=(14, 14, 14))
    angles = np.zeros(3)
    angles[axis] = np.pi / 2
    matrix = rotation_matrix(angles)
    patch, map_patch = extract_patch(image, instance_map, np.zeros(3, int), (14, 14, 14), matrix)
    plane = tuple(a for a in range(3) if a != axis)
    np.testing.assert_array_equal(map_patch, np.rot90(instance_map, k=-1, axes=plane))
    np.testing.assert_allclose(patch.numpy(), np.rot90(image, k=-1, axes=tuple(a + 1 for a in plane)), atol=1e-5)
    boxes, _ = boxes_from_instance_mask(instance_map)
    np.testing.assert_allclose(transform_boxes(boxes, np.zeros(3), (14, 14, 14), matrix),
                               boxes_from_instance_mask(map_patch)[0], atol=1e-9)


def test_affine_path_is_exact_on_a_linear_image(rng):
    # Bilinear interpolation reproduces a linear function, so every interior voxel has a known value.
    shape, size, origin = (30, 28, 26), np.array([10, 9, 8]), np.array([9, 8, 7])
    slope = np.array([1.0, -2.0, 0.5])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    image = (grid @ slope)[None].astype(np.float32)
    matrix = rotation_matrix([0.3, -0.2, 0.4]) / 1.3 @ np.diag([-1.0, 1.0, 1.0])
    patch, _ = extract_patch(image, None, origin, tuple(size), matrix)
    out = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), axis=-1)
    centre = origin + (size - 1) / 2
    expected = ((out - (size - 1) / 2) @ matrix.T + centre) @ slope
    np.testing.assert_allclose(patch.numpy()[0], expected, atol=2e-4)


def test_rotated_object_stays_inside_its_transformed_box(rng):
    image, instance_map = _instances(rng, shape=(24, 22, 20))
    boxes, ids = boxes_from_instance_mask(instance_map)
    for _ in range(5):
        matrix = rotation_matrix(rng.uniform(-0.5, 0.5, size=3)) / rng.uniform(0.7, 1.4)
        origin = rng.integers(-2, 6, size=3)
        _, map_patch = extract_patch(image, instance_map, origin, (16, 16, 16), matrix)
        hulls = transform_boxes(boxes, origin, (16, 16, 16), matrix)
        exact, present = boxes_from_instance_mask(map_patch)
        for box, instance in zip(exact, present):
            hull = hulls[list(ids).index(instance)]
            assert np.all(box[:3] >= np.floor(hull[:3]) - 1) and np.all(box[3:] <= np.ceil(hull[3:]) + 1)


def test_patch_of_a_small_volume_is_padded_to_full_size(rng):
    image = rng.normal(size=(1, 3, 4, 2)).astype(np.float32) + 10
    instance_map = np.ones((3, 4, 2), dtype=np.int16)
    for matrix in (None, rotation_matrix([0.1, 0.2, 0.3])):
        patch, map_patch = extract_patch(image, instance_map, np.array([-2, -1, -3]), (6, 6, 6), matrix)
        assert patch.shape == (1, 6, 6, 6) and map_patch.shape == (6, 6, 6)
        assert patch[0, 0, 0, 0] == 0.0 and map_patch[0, 0, 0] == 0
    np.testing.assert_array_equal(patch.numpy().shape, (1, 6, 6, 6))


def test_boxes_from_a_transformed_map_cover_every_voxel_and_are_tight(rng):
    from shared.data.sampling import boxes_of_patch_instances

    image, instance_map = _instances(rng, shape=(24, 22, 20))
    matrix = rotation_matrix([0.4, -0.3, 0.2]) / 1.2 @ np.diag([1.0, -1.0, 1.0])
    _, map_patch = extract_patch(image, instance_map, np.array([1, 2, 0]), (16, 16, 16), matrix)
    boxes, labels, ids = boxes_of_patch_instances(map_patch, np.array([1, 2]), np.array([0, 1]))
    assert len(ids) == 2
    for box, instance in zip(boxes, ids):
        voxels = np.argwhere(map_patch == instance)
        np.testing.assert_array_equal(voxels.min(0), box[:3])
        np.testing.assert_array_equal(voxels.max(0) + 1, box[3:])
