import nibabel as nib
import numpy as np
import pytest

from shared.io.errors import InputError
from shared.io.images import check_same_grid, load_label_map, load_volume, save_nifti


def _affine():
    affine = np.diag([0.7, 0.8, 1.25, 1.0])
    affine[:3, 3] = [-5.0, 2.0, 7.0]
    return affine


def test_save_load_round_trip_two_channels(tmp_path, rng):
    arrays = [rng.normal(size=(6, 5, 4)).astype(np.float32) for _ in range(2)]
    paths = [save_nifti(tmp_path / f"a_{i:04d}.nii.gz", a, _affine()) for i, a in enumerate(arrays)]
    volume = load_volume(paths)
    assert volume.array.shape == (2, 6, 5, 4) and volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, np.stack(arrays))
    np.testing.assert_allclose(volume.affine, _affine())
    np.testing.assert_allclose(volume.spacing, [0.7, 0.8, 1.25])
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_label_map_checks(tmp_path):
    save_nifti(tmp_path / "img.nii.gz", np.zeros((6, 5, 4), np.float32), _affine())
    save_nifti(tmp_path / "frac.nii.gz", np.full((6, 5, 4), 0.5, np.float32), _affine())
    shifted = _affine()
    shifted[0, 3] += 1
    save_nifti(tmp_path / "moved.nii.gz", np.zeros((6, 5, 4), np.int16), shifted)
    image = load_volume(tmp_path / "img.nii.gz")
    with pytest.raises(InputError, match="frac.nii.gz.*fractional"):
        load_label_map(tmp_path / "frac.nii.gz")
    with pytest.raises(InputError, match="moved.nii.gz.*affine"):
        load_label_map(tmp_path / "moved.nii.gz", like=image)
    with pytest.raises(InputError, match="shape"):
        check_same_grid("x.nii", (1, 2, 3), _affine(), (1, 2, 4), _affine(), what="image")


@pytest.mark.parametrize("problem", ["missing", "corrupt", "2d", "4d", "nan", "grid"])
def test_bad_images_name_the_file(tmp_path, problem):
    good = save_nifti(tmp_path / "good.nii.gz", np.zeros((4, 4, 4), np.float32), _affine())
    bad = tmp_path / "bad.nii.gz"
    if problem == "corrupt":
        bad.write_bytes(b"this is not an image")
    elif problem == "2d":
        nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), _affine()), bad)
    elif problem == "4d":
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), _affine()), bad)
    elif problem == "nan":
        array = np.zeros((4, 4, 4), np.float32)
        array[1, 1, 1] = np.nan
        save_nifti(bad, array, _affine())
    elif problem == "grid":
        save_nifti(bad, np.zeros((4, 4, 5), np.float32), _affine())
    with pytest.raises(InputError) as caught:
        load_volume([good, bad])
    assert caught.value.source == str(bad)
