import numpy as np
import pytest

from shared.boxes.convention import boxes_from_instance_mask
from shared.data.synthetic.lung_ct import generate_lung_case

SHAPE, SPACING = (40, 40, 24), (1.4, 1.4, 2.5)


@pytest.fixture(scope="module")
def case():
    return generate_lung_case(np.random.default_rng(7), SHAPE, SPACING)


def test_case_layout_and_ground_truth(case):
    assert case.image.shape == (1, *SHAPE) and case.image.dtype == np.int16
    assert case.instances.shape == SHAPE
    boxes, ids = boxes_from_instance_mask(case.instances)
    assert len(case.labels) == len(ids) >= 1
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    assert set(case.labels) <= {0, 1}
    np.testing.assert_allclose(np.diag(case.affine)[:3], SPACING)


def test_intensities_are_chest_ct(case):
    hu = case.image[0]
    nodules = case.instances > 0
    assert -1024 <= hu.min() and hu.max() <= 3071
    lung_like = hu[(hu < -600)]
    assert -950 < np.median(lung_like) < -750  # parenchyma about -850 HU
    assert np.mean(hu[nodules]) > np.median(lung_like) + 200  # nodules stand out of the lung


def test_same_rng_same_case_other_rng_other_case(case):
    again = generate_lung_case(np.random.default_rng(7), SHAPE, SPACING)
    np.testing.assert_array_equal(again.image, case.image)
    np.testing.assert_array_equal(again.instances, case.instances)
    other = generate_lung_case(np.random.default_rng(8), SHAPE, SPACING)
    assert not np.array_equal(other.image, case.image)


def test_empty_case_has_no_nodule():
    empty = generate_lung_case(np.random.default_rng(7), SHAPE, SPACING, empty=True)
    assert empty.instances.max() == 0 and empty.labels == []


def test_vessel_turns_cross_products_are_numpys_bit_for_bit(rng):
    from shared.data.synthetic.vessels import _cross

    for a, b in rng.standard_normal((200, 2, 3)) * rng.uniform(1e-3, 1e3, (200, 2, 1)):
        assert np.array_equal(_cross(a, b), np.cross(a, b))
