import json

import numpy as np
import pytest

from tests._cases import spaced_affine, write_dataset
from shared.data.fingerprint import channel_modalities, compute_fingerprint
from shared.io.datalist import write_datalist
from shared.io.errors import InputError
from shared.io.images import save_nifti


def _two_case_dataset(tmp_path, with_mask):
    """Foreground values chosen by hand: case a holds 10..17 in its object, case b 100."""
    entries = []
    for name, spacing, values in (("a", (0.5, 0.5, 2.0), np.arange(10, 18)), ("b", (1.0, 0.5, 3.0), [100.0] * 8)):
        image = np.full((8, 8, 8), -1000, dtype=np.int16)
        image[2:4, 2:4, 2:4] = np.asarray(values).reshape(2, 2, 2)
        affine = spaced_affine(spacing)
        save_nifti(tmp_path / f"{name}.nii.gz", image, affine)
        mask = np.zeros((8, 8, 8), np.int16)
        mask[2:4, 2:4, 2:4] = 1
        save_nifti(tmp_path / f"{name}_mask.nii.gz", mask, affine)
        from shared.boxes.convention import boxes_voxel_to_world
        entry = {"image": str(tmp_path / f"{name}.nii.gz"), "box": boxes_voxel_to_world(np.array([[2, 2, 2, 4, 4, 4]]), affine).tolist(),
                 "label": [0]}
        if with_mask:
            entry["mask"] = str(tmp_path / f"{name}_mask.nii.gz")
        entries.append(entry)
    path = tmp_path / "d.json"
    write_datalist(path, {"training": entries, "modality": "ct"})
    return path


@pytest.mark.parametrize("with_mask", [True, False])
def test_statistics_by_hand_masks_or_boxes(tmp_path, with_mask):
    fingerprint = compute_fingerprint(_two_case_dataset(tmp_path, with_mask))
    values = np.concatenate([np.arange(10, 18), [100.0] * 8])
    low, high = np.percentile(values, [0.5, 99.5])
    channel = fingerprint["channels"][0]
    assert channel["modality"] == "CT"
    assert channel["clip"] == pytest.approx([low, high])
    assert channel["mean"] == pytest.approx(np.clip(values, low, high).mean())
    assert channel["std"] == pytest.approx(np.clip(values, low, high).std())
    assert fingerprint["median_spacing"] == pytest.approx([0.75, 0.5, 2.5])
    assert fingerprint["foreground_voxels"] == 16


def test_subsampling_is_deterministic(tmp_path, rng):
    path = write_dataset(tmp_path, rng=rng, training=2, validation=0, objects=3)
    first = compute_fingerprint(path, samples_per_case=5, seed=3)
    assert first == compute_fingerprint(path, samples_per_case=5, seed=3)
    assert first["foreground_voxels"] == 10


def test_modalities():
    assert channel_modalities({}, 2) == ["CT", "CT"]
    assert channel_modalities({"modality": ["CT", "T2"]}, 2) == ["CT", "MRI"]
    assert channel_modalities({"modality": {"1": "MRI", "0": "ct"}}, 2) == ["CT", "MRI"]
    with pytest.raises(InputError, match="images have 3"):
        channel_modalities({"modality": ["CT", "MRI"]}, 3, source="d.json")


def test_mri_needs_no_statistics_and_empty_training_warns(tmp_path, rng):
    path = write_dataset(tmp_path, rng=rng, training=2, validation=0, objects=0)
    with pytest.warns(UserWarning, match="no object"):
        ct = compute_fingerprint(path)
    assert ct["channels"][0]["mean"] == pytest.approx(-500, abs=20)
    data = json.loads(path.read_text())
    data["modality"] = "MRI"
    path.write_text(json.dumps(data))
    assert compute_fingerprint(path)["channels"] == [{"modality": "MRI", "clip": None, "mean": None, "std": None}]


def test_region_read_same_for_nifti_and_metaimage(tmp_path, rng):
    import itk

    from shared.data.fingerprint import _read_region
    from shared.io.images import load_volume

    itk.imwrite(itk.image_from_array(rng.normal(size=(5, 6, 7)).astype(np.float32)), str(tmp_path / "a.mhd"))
    volume = load_volume(tmp_path / "a.mhd")
    save_nifti(tmp_path / "a.nii.gz", volume.array[0], volume.affine)
    region = (slice(1, 4), slice(2, 6), slice(0, 3))
    np.testing.assert_array_equal(_read_region(str(tmp_path / "a.nii.gz"), region), volume.array[0][region])
    np.testing.assert_array_equal(_read_region(str(tmp_path / "a.mhd"), region), volume.array[0][region])
