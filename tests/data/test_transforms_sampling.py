import numpy as np
import torch

from shared.data.transforms_sampling import RandDetectionPatchd
from shared.data.transforms_spatial import MATRIX_KEY


def _case(matrix=None):
    image = np.arange(10 * 8 * 6, dtype=np.float32).reshape(1, 10, 8, 6)
    data = {"image": image, "mask": None, "boxes": np.array([[1.0, 2.0, 1.0, 4.0, 5.0, 3.0]], np.float32),
            "labels": np.array([1]), "instances": None, "case": "c", "batch_position": 0}
    if matrix is not None:
        data[MATRIX_KEY] = matrix
    return data


def test_a_whole_volume_patch_mirrors_image_boxes_and_target_together():
    patch = RandDetectionPatchd([10, 8, 6], batch_size=1, foreground_fraction=0.0)
    plain, mirrored = patch(_case()), patch(_case(-np.eye(3)))
    assert torch.equal(mirrored["image"], plain["image"].flip(1, 2, 3))
    np.testing.assert_array_equal(plain["boxes"].numpy(), [[1, 2, 1, 4, 5, 3]])
    np.testing.assert_array_equal(mirrored["boxes"].numpy(), [[6, 3, 3, 9, 6, 5]])  # size - far edge
    assert torch.equal(mirrored["seg"], plain["seg"].flip(1, 2, 3)) and plain["seg"].max() == 2  # class + 1
    assert set(plain) == {"image", "boxes", "labels", "seg", "case", "foreground"}  # no volume-sized keys


def test_the_batch_position_decides_the_foreground_patches():
    patch = RandDetectionPatchd(4, batch_size=2, foreground_fraction=0.5)
    for seed in range(20):
        patch.set_random_state(seed=seed)
        assert not patch({**_case(), "batch_position": 0})["foreground"]
        assert patch({**_case(), "batch_position": 1})["foreground"]
