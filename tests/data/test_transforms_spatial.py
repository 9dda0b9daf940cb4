import numpy as np
import pytest

from shared.data.transforms_spatial import MATRIX_KEY, RandMirrorPatchd, RandRotatePatchd, RandZoomPatchd


def test_each_transform_multiplies_its_part_into_the_pending_matrix():
    data = RandMirrorPatchd(prob=1.0)({})
    np.testing.assert_array_equal(data[MATRIX_KEY], -np.eye(3))
    data = RandZoomPatchd(prob=1.0, zoom_range=[2.0, 2.0])(data)
    np.testing.assert_allclose(data[MATRIX_KEY], -np.eye(3) / 2)  # objects twice as large: half the source
    assert np.array_equal(RandMirrorPatchd(prob=0.0)({})[MATRIX_KEY], np.eye(3))
    assert MATRIX_KEY not in RandZoomPatchd(prob=0.0)({})


def test_rotation_is_a_rotation_and_skips_boxes_only_cases_unless_asked():
    rotate = RandRotatePatchd(prob=1.0, degrees=30.0)
    rotate.set_random_state(seed=0)
    matrix = rotate({"mask": np.zeros((2, 2, 2))})[MATRIX_KEY]
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(matrix) == pytest.approx(1.0) and not np.allclose(matrix, np.eye(3))
    assert MATRIX_KEY not in rotate({"mask": None})
    assert MATRIX_KEY in RandRotatePatchd(prob=1.0, rotate_boxes_only_cases=True)({"mask": None})


def test_the_same_random_state_draws_the_same_matrix():
    first, second = RandZoomPatchd(prob=1.0), RandZoomPatchd(prob=1.0)
    first.set_random_state(seed=3)
    second.set_random_state(seed=3)
    np.testing.assert_array_equal(first({})[MATRIX_KEY], second({})[MATRIX_KEY])
    with pytest.raises(ValueError, match="zoom_range"):
        RandZoomPatchd(zoom_range=[1.4, 0.7])
