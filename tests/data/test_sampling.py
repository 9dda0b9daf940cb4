from __future__ import annotations

import numpy as np
import pytest

from shared.data.sampling import (
    boxes_of_patch_instances,
    choose_patch_origin,
    crop_boxes,
    is_foreground_sample,
    origin_range,
    read_region,
)


def test_foreground_positions_are_the_last_of_the_batch(rng):
    for _ in range(20):
        flags = [is_foreground_sample(p, 4, 0.5, rng) for p in range(4)]
        assert flags == [False, False, True, True]
    assert not any(is_foreground_sample(p, 4, 0.0, rng) for p in range(4))
    assert all(is_foreground_sample(p, 4, 1.0, rng) for p in range(4))


@pytest.mark.parametrize("batch_size, fraction", [(1, 0.5), (3, 0.5), (2, 0.33), (5, 0.7)])
def test_foreground_fraction_holds_for_any_batch_size(rng, batch_size, fraction):
    draws = 3000
    share = np.mean([is_foreground_sample(p, batch_size, fraction, rng)
                     for _ in range(draws) for p in range(batch_size)])
    assert abs(share - fraction) < 4 * np.sqrt(fraction * (1 - fraction) / (draws * batch_size)) + 1e-9


def test_foreground_fraction_out_of_range_raises(rng):
    with pytest.raises(ValueError, match="foreground_fraction"):
        is_foreground_sample(0, 2, 1.5, rng)


def test_random_origins_are_uniform_over_the_valid_range(rng):
    origins = np.array([choose_patch_origin((10, 5, 8), (4, 5, 12), rng) for _ in range(2000)])
    low, high = origin_range((10, 5, 8), (4, 5, 12))
    np.testing.assert_array_equal(low, [0, 0, -4])
    np.testing.assert_array_equal(high, [6, 0, 0])
    for axis in range(3):
        values, counts = np.unique(origins[:, axis], return_counts=True)
        np.testing.assert_array_equal(values, np.arange(low[axis], high[axis] + 1))
        assert counts.min() > 0.6 * counts.mean()


def test_foreground_origin_contains_the_object_and_jitters(rng):
    shape, patch = (60, 50, 40), (16, 16, 16)
    boxes = np.array([[30, 20, 10, 32, 23, 11], [0, 0, 38, 3, 2, 40]], dtype=np.float32)
    offsets = []
    for _ in range(400):
        origin = choose_patch_origin(shape, patch, rng, boxes=boxes)
        low, high = origin_range(shape, patch)
        assert np.all(origin >= low) and np.all(origin <= high)
        overlaps = [np.all(np.minimum(b[3:], origin + patch) > np.maximum(b[:3], origin)) for b in boxes]
        assert any(overlaps)
        if overlaps[0] and not overlaps[1]:
            offsets.append(boxes[0, :3] - origin)
    offsets = np.array(offsets)
    assert len(offsets) > 100  # both objects get chosen
    assert np.all(offsets.min(0) <= 5) and np.all(offsets.max(0) >= 10)  # not always at the centre


def test_empty_boxes_give_random_origin(rng):
    origins = {tuple(choose_patch_origin((20, 20, 20), (4, 4, 4), rng, boxes=np.zeros((0, 6)))) for _ in range(50)}
    assert len(origins) > 40


def test_read_region_matches_padding_reference(rng):
    array = rng.normal(size=(2, 7, 6, 5)).astype(np.float32)
    padded = np.pad(array, [(0, 0), (10, 10), (10, 10), (10, 10)], constant_values=-3.0)
    for _ in range(50):
        start = rng.integers(-9, 7, size=3)
        stop = start + rng.integers(1, 9, size=3)
        expected = padded[(slice(None),) + tuple(slice(a + 10, b + 10) for a, b in zip(start, stop))]
        np.testing.assert_array_equal(read_region(array, start, stop, fill=-3.0), expected)
    assert read_region(array[0], [-2, 0, 0], [9, 6, 5]).shape == (11, 6, 5)


def test_crop_boxes_clips_and_keeps_boxes_at_least_half_inside():
    boxes = np.array([
        [2, 2, 2, 4, 4, 4],      # inside
        [-2, 0, 0, 2, 2, 2],     # exactly half inside: kept, clipped
        [-3, 0, 0, 2, 2, 2],     # 40 % inside: dropped
        [9, 9, 9, 12, 12, 12],   # outside: dropped
        [7, 1, 1, 9, 3, 3],      # half inside at the far end: kept
    ], dtype=np.float32)
    cropped, labels = crop_boxes(boxes, np.arange(5), (8, 8, 8))
    np.testing.assert_array_equal(labels, [0, 1, 4])
    np.testing.assert_array_equal(cropped, [[2, 2, 2, 4, 4, 4], [0, 0, 0, 2, 2, 2], [7, 1, 1, 8, 3, 3]])
    assert crop_boxes(boxes, np.arange(5), (8, 8, 8), min_visible_fraction=0.3)[0].shape == (4, 6)
    empty, empty_labels = crop_boxes(np.zeros((0, 6)), np.zeros(0), (8, 8, 8))
    assert empty.shape == (0, 6) and empty_labels.shape == (0,)


def test_boxes_of_patch_instances_are_exact_and_classed():
    instance_map = np.zeros((6, 6, 6), dtype=np.int64)
    instance_map[0:2, 1:3, 2:6] = 7
    instance_map[4, 4, 4] = 2
    boxes, labels, ids = boxes_of_patch_instances(instance_map, np.array([2, 5, 7]), np.array([1, 0, 3]))
    np.testing.assert_array_equal(ids, [2, 7])
    np.testing.assert_array_equal(labels, [1, 3])
    np.testing.assert_array_equal(boxes, [[4, 4, 4, 5, 5, 5], [0, 1, 2, 2, 3, 6]])
    empty = boxes_of_patch_instances(np.zeros((3, 3, 3)), np.array([1]), np.array([0]))
    assert empty[0].shape == (0, 6) and empty[1].shape == (0,)
    with pytest.raises(KeyError):
        boxes_of_patch_instances(instance_map, np.array([2]), np.array([0]))


def test_foreground_point_lands_in_the_central_half_of_the_transformed_patch(rng):
    from shared.data.augment import rotation_matrix

    size = np.array([16, 16, 16])
    matrix = rotation_matrix([0.0, 0.3, np.pi / 4]) / 1.4  # objects grow by 1.4, rotated
    point = np.array([50.0, 40.0, 45.0])
    box = np.concatenate([point, point + 1])[None]
    for _ in range(200):
        origin = choose_patch_origin((100, 100, 100), tuple(size), rng, boxes=box, matrix=matrix)
        in_patch = np.linalg.solve(matrix, point - (origin + (size - 1) / 2))  # offset from the patch centre
        assert np.all(np.abs(in_patch) <= size / 4 + 1.5)  # rounding the origin: at most 1.4 * sqrt(3) / 2
