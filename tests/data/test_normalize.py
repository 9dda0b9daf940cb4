import numpy as np
import pytest

from shared.data.normalize import BACKGROUND_FRACTION, normalize_ct, normalize_image, normalize_mri


def test_ct_by_hand():
    channel = np.array([-2000.0, 0.0, 100.0, 5000.0], dtype=np.float32).reshape(1, 1, 4)
    out = normalize_ct(channel, clip=[-1000, 400], mean=100.0, std=50.0)
    np.testing.assert_allclose(out.ravel(), [(-1000 - 100) / 50, -2.0, 0.0, (400 - 100) / 50])
    assert out.dtype == np.float32


def test_mri_all_voxels_when_no_background():
    channel = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32).reshape(1, 2, 2)
    out, used_nonzero = normalize_mri(channel)
    assert not used_nonzero
    np.testing.assert_allclose(out.ravel(), (np.arange(1, 5) - 2.5) / np.std([1, 2, 3, 4]), rtol=1e-6)


def test_mri_nonzero_voxels_when_clear_background():
    channel = np.zeros((4, 4, 4), dtype=np.float32)
    channel[0, 0, :2] = [10.0, 20.0]
    assert (channel == 0).mean() >= BACKGROUND_FRACTION
    out, used_nonzero = normalize_mri(channel)
    assert used_nonzero
    assert out[0, 0, 0] == pytest.approx(-1.0) and out[0, 0, 1] == pytest.approx(1.0)
    assert np.count_nonzero(out) == 2  # background stays 0


def test_image_per_channel_and_in_place(rng):
    array = rng.normal(500, 100, size=(2, 5, 5, 5)).astype(np.float32)
    plan = [{"modality": "CT", "clip": [300.0, 700.0], "mean": 500.0, "std": 100.0},
            {"modality": "MRI", "clip": None, "mean": None, "std": None}]
    expected_ct = (np.clip(array[0], 300, 700) - 500) / 100
    expected_mri = (array[1] - array[1].mean()) / array[1].std()
    out = normalize_image(array, plan)
    assert out is not array
    np.testing.assert_allclose(out[0], expected_ct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], expected_mri, rtol=1e-4, atol=1e-5)
    assert normalize_image(array, plan, in_place=True) is array
    with pytest.raises(ValueError):
        normalize_image(array[:1], plan)
