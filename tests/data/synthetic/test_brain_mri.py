import numpy as np

from shared.boxes.convention import boxes_from_instance_mask
from shared.data.synthetic.brain_mri import generate_brain_case

SHAPE, SPACING = (40, 48, 32), (4.0, 4.0, 5.0)


def test_two_channels_on_one_grid_with_lesions_seen_in_both():
    case = generate_brain_case(np.random.default_rng(1), SHAPE, SPACING)
    assert case.image.shape == (2, *SHAPE) and case.image.dtype == np.int16
    _, ids = boxes_from_instance_mask(case.instances)
    assert len(ids) >= 1 and case.labels == [0] * len(ids)
    brain = case.image[0] > np.percentile(case.image[0], 60)
    lesion = case.instances > 0
    # enhancing in T1c, bright in FLAIR: brighter than the brain around it in both contrasts
    for channel in case.image:
        assert channel[lesion].mean() - channel[brain & ~lesion].mean() > 0.2 * channel[brain].mean()
    again = generate_brain_case(np.random.default_rng(1), SHAPE, SPACING)
    np.testing.assert_array_equal(again.image, case.image)
    assert not np.array_equal(generate_brain_case(np.random.default_rng(2), SHAPE, SPACING).image, case.image)


def test_empty_brain_case():
    case = generate_brain_case(np.random.default_rng(1), SHAPE, SPACING, empty=True)
    assert case.instances.max() == 0 and case.labels == []
