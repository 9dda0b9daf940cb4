import nibabel as nib
import numpy as np
import pytest

from shared.io.errors import InputError
from shared.io.images import check_same_grid, dicom_series_uid, load_label_map, load_volume, save_nifti


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


@pytest.mark.parametrize("problem", ["missing", "corrupt", "2d", "4d", "nan", "grid", "zero affine"])
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
    elif problem == "zero affine":  # nibabel's writers refuse it; a header can still carry it
        header = nib.Nifti1Header()
        header.set_sform(np.diag([0.0, 0.0, 0.0, 1.0]), code=1)
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), None, header=header), bad)
    with pytest.raises(InputError) as caught:
        load_volume([good, bad])
    assert caught.value.source == str(bad)


def test_a_single_slice_is_not_a_volume(tmp_path):
    # one DICOM file used to load as a 128 x 128 x 1 "volume" (and gave 100 boxes)
    bad = save_nifti(tmp_path / "slice.nii.gz", np.zeros((128, 128, 1), np.int16), _affine())
    with pytest.raises(InputError, match=r"\(128, 128, 1\) has fewer than 4 voxels") as caught:
        load_volume(bad)
    assert caught.value.source == str(bad)
    assert load_volume(save_nifti(tmp_path / "thin.nii.gz", np.zeros((8, 8, 4), np.int16), _affine())).array.shape == (1, 8, 8, 4)


def _oblique_flipped_affine():
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.7, 0.8, -1.25])  # x and z flipped, rotated about z
    affine[:3, 3] = [30.0, -12.0, 7.5]
    return affine


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("kind", ["int16_scaled", "float32", "trailing_singleton", "conflicting_forms"])
def test_nifti_fast_path_matches_monai_load_image(tmp_path, rng, suffix, kind):
    from monai.transforms import LoadImage

    path = tmp_path / f"scan{suffix}"
    data = rng.integers(-1000, 2000, size=(7, 6, 5)).astype(np.int16)
    if kind == "float32":
        data = rng.normal(size=(7, 6, 5)).astype(np.float32)
    elif kind == "trailing_singleton":
        data = data[..., None]
    image = nib.Nifti1Image(data, _oblique_flipped_affine())
    if kind == "int16_scaled":
        image.header.set_slope_inter(0.5, -3.0)
    if kind == "conflicting_forms":  # pixdim follows the qform: MONAI's header repair then uses the qform
        image.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    nib.save(image, path)
    reference = LoadImage(image_only=True)(str(path))
    volume = load_volume(path)
    np.testing.assert_array_equal(volume.array[0], np.asarray(reference).reshape(7, 6, 5))
    np.testing.assert_allclose(volume.affine, np.asarray(reference.affine, dtype=np.float64), atol=1e-6)
    if kind != "conflicting_forms":
        np.testing.assert_allclose(volume.affine, _oblique_flipped_affine(), atol=1e-6)
    assert volume.array.shape == (1, 7, 6, 5) and volume.array.dtype == np.float32
    assert not isinstance(volume.array, np.memmap) and volume.array.flags.c_contiguous


def test_label_map_fast_path_keeps_integer_ids(tmp_path):
    ids = np.zeros((6, 5, 4), np.int16)
    ids[1:3, 1:3, 1:3] = 7
    save_nifti(tmp_path / "ids.nii.gz", ids, _oblique_flipped_affine())
    labels = load_label_map(tmp_path / "ids.nii.gz")
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, ids)


def write_dicom_series(folder, array, spacing=(0.7, 0.8, 1.5)):
    """A DICOM series (one file per slice along the last axis) written by ITK; returns its SeriesInstanceUID."""
    itk = pytest.importorskip("itk")
    folder.mkdir(parents=True, exist_ok=True)
    image = itk.image_from_array(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))  # ITK arrays are z, y, x
    image.SetSpacing(list(spacing))
    names = [str(folder / f"slice{index:03d}.dcm") for index in range(array.shape[2])]
    writer = itk.ImageSeriesWriter[type(image), itk.Image[itk.SS, 2]].New(
        Input=image, ImageIO=itk.GDCMImageIO.New(), FileNames=names)
    writer.Update()
    reader = itk.GDCMImageIO.New()
    reader.SetFileName(names[0])
    reader.ReadImageInformation()
    return reader.GetValueFromTag("0020|000e", "")[1].strip()


def test_dicom_series_uid_is_the_series_instance_uid(tmp_path, rng):
    uid = write_dicom_series(tmp_path / "patient_folder", rng.integers(0, 300, size=(8, 6, 5)).astype(np.int16))
    assert uid.startswith("1.") and uid != "patient_folder"
    assert dicom_series_uid(tmp_path / "patient_folder") == uid
    assert dicom_series_uid(tmp_path / "patient_folder" / "slice000.dcm") == uid
    assert dicom_series_uid(save_nifti(tmp_path / "scan.nii.gz", np.zeros((4, 4, 4), np.int16), _affine())) is None


def test_a_one_file_dicom_is_not_a_volume(tmp_path):
    write_dicom_series(tmp_path / "one", np.zeros((128, 128, 1), np.int16))
    for path in (tmp_path / "one", tmp_path / "one" / "slice000.dcm"):
        with pytest.raises(InputError, match=r"\(128, 128, 1\) has fewer than 4 voxels") as caught:
            load_volume(path)
        assert caught.value.source == str(path)
