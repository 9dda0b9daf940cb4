import json

import nibabel as nib
import numpy as np
import pytest

from tests._cases import spaced_affine, write_dataset
from shared.data.preprocess import preprocess_datalist
from shared.data.validate import case_id, validate_datalist
from shared.io.errors import InputError
from shared.io.images import save_nifti


def test_case_id():
    assert case_id("/a/b/lung_003_0000.nii.gz") == "lung_003"
    assert case_id(["/a/x_0000.nii", "/a/x_0001.nii"]) == "x"
    assert case_id("1.3.6.1.4.1.14519.5.2.1.6279.6001.1002.mhd") == "1.3.6.1.4.1.14519.5.2.1.6279.6001.1002"
    assert case_id("scan_0001.nii.gz") == "scan_0001"


def test_valid_dataset_passes_with_instances(tmp_path, rng):
    path = write_dataset(tmp_path, rng=rng, training=2, validation=1)
    datalist, cases = validate_datalist(path)
    assert [c.split for c in cases] == ["training", "training", "validation"]
    assert cases[0].instances == [1, 2] and cases[0].shape == (20, 18, 12)


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _nan(entry, folder):
    array = np.zeros((20, 18, 12), np.float32)
    array[0, 0, 0] = np.inf
    save_nifti(folder / "nan.nii.gz", array, spaced_affine())
    entry["image"] = "nan.nii.gz"


def _shape(entry, folder):
    save_nifti(folder / "small.nii.gz", np.zeros((20, 18, 11), np.int16), spaced_affine())
    entry["mask"] = "small.nii.gz"


def _affine(entry, folder):
    save_nifti(folder / "moved.nii.gz", np.zeros((20, 18, 12), np.int16), spaced_affine(origin=(0, 0, 0)))
    entry["mask"] = "moved.nii.gz"


def _four_d(entry, folder):
    nib.save(nib.Nifti1Image(np.zeros((20, 18, 12, 2), np.int16), spaced_affine()), folder / "4d.nii.gz")
    entry["image"] = "4d.nii.gz"


def _two_d(entry, folder):
    nib.save(nib.Nifti1Image(np.zeros((20, 18), np.int16), spaced_affine()), folder / "2d.nii.gz")
    entry["image"] = "2d.nii.gz"


def _slice(entry, folder):
    save_nifti(folder / "slice.nii.gz", np.zeros((20, 18, 1), np.int16), spaced_affine())
    entry.update(image="slice.nii.gz", box=[], label=[])
    entry.pop("mask")


def _singular(entry, folder, affine):
    header = nib.Nifti1Header()  # nibabel's writers refuse such an affine; a header can still carry it
    header.set_sform(affine, code=1)
    nib.save(nib.Nifti1Image(np.zeros((20, 18, 12), np.int16), None, header=header), folder / "singular.nii.gz")
    entry.update(image="singular.nii.gz", box=[], label=[])
    entry.pop("mask")


def _collinear_affine():
    affine = spaced_affine()
    affine[:3, 1] = affine[:3, 0]
    return affine


def _corrupt(entry, folder):
    (folder / "corrupt.nii.gz").write_bytes(b"\x1f\x8b garbage")
    entry["image"] = "corrupt.nii.gz"


BAD = {
    "missing image": (lambda e, f: e.update(image="gone.nii.gz"), "gone.nii.gz", "not found"),
    "corrupt image": (_corrupt, "corrupt.nii.gz", "cannot be read"),
    "4-D image": (_four_d, "4d.nii.gz", "3-D"),
    "2-D image": (_two_d, "2d.nii.gz", "3-D"),
    "NaN voxels": (_nan, "nan.nii.gz", "NaN"),
    "label shape": (_shape, "small.nii.gz", "shape"),
    "label affine": (_affine, "moved.nii.gz", "affine"),
    "instance without class": (lambda e, f: (e["box"].pop(), e["label"].pop()), "case0_mask.nii.gz", "needs a box"),
    "instance id without class entry": (lambda e, f: (e["box"].pop(), e["label"].pop(), e.update(instances=[1])),
                                        "case0_mask.nii.gz", r"\[2\] in the mask have no box/class"),
    "instances not in mask": (lambda e, f: e.update(instances=[1, 5]), "case0_mask.nii.gz", r"\[5\]"),
    "box outside image": (lambda e, f: e["box"][0].__setitem__(0, 500.0), "case0_0000.nii.gz", "outside"),
    "2-D slice as a volume": (_slice, "slice.nii.gz", "fewer than 4 voxels"),
    "zero affine": (lambda e, f: _singular(e, f, np.diag([0.0, 0.0, 0.0, 1.0])), "singular.nii.gz", "singular"),
    "singular affine": (lambda e, f: _singular(e, f, _collinear_affine()), "singular.nii.gz", "singular"),
}


@pytest.mark.parametrize("problem", list(BAD))
def test_bad_input_names_file_and_writes_nothing(tmp_path, rng, problem):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1)
    change, culprit, message = BAD[problem]
    _edit(path, lambda data: change(data["training"][0], tmp_path / "raw"))
    with pytest.raises(InputError, match=message) as caught:
        preprocess_datalist(path, tmp_path / "cache", progress=False)
    assert caught.value.source.endswith(culprit)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_unreadable_datalist_and_empty_split(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("[1, 2")
    with pytest.raises(InputError) as caught:
        preprocess_datalist(path, tmp_path / "cache", progress=False)
    assert caught.value.source == str(path)
    path.write_text('{"training": [], "validation": []}')
    with pytest.raises(InputError, match="'training' split is empty"):
        validate_datalist(path)
    assert not (tmp_path / "cache").exists()


def test_channel_count_and_duplicate_case(tmp_path, rng):
    path = write_dataset(tmp_path / "a", rng=rng, training=1, validation=1, channels=2)
    _edit(path, lambda data: data["validation"][0].update(image=data["validation"][0]["image"][0]))
    with pytest.raises(InputError, match="1 channels, other cases have 2"):
        validate_datalist(path)
    path = write_dataset(tmp_path / "b", rng=rng, training=1, validation=1)
    _edit(path, lambda data: data["training"].append(data["training"][0]))
    with pytest.raises(InputError, match="twice"):
        validate_datalist(path)
    _edit(path, lambda data: (data["training"].pop(), data["training"][0].update(label=[0, 2])))
    with pytest.raises(InputError, match="only 2 classes") as caught:
        validate_datalist(path)
    assert caught.value.source == str(path)


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_int16_scan_in_validation_is_refused_before_anything_is_written(tmp_path, rng, suffix):
    # the header alone reads fine: only the size of the voxel data tells
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1)
    scan = tmp_path / "raw" / f"cut{suffix}"
    save_nifti(scan, rng.integers(-1000, 400, size=(20, 18, 12)).astype(np.int16), spaced_affine())
    _truncate(scan, 0.6)
    _edit(path, lambda data: data["validation"][0].update(image=scan.name))
    with pytest.raises(InputError, match="truncated") as caught:
        preprocess_datalist(path, tmp_path / "cache", progress=False)
    assert caught.value.source == str(scan)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_truncated_label_map_is_refused(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=1, validation=0)
    mask = tmp_path / "raw" / "cut_mask.nii"
    data = json.loads(path.read_text())
    save_nifti(mask, nib.load(tmp_path / "raw" / data["training"][0]["mask"]).get_fdata().astype(np.int16),
               spaced_affine())
    _truncate(mask, 0.7)
    _edit(path, lambda data: data["training"][0].update(mask=mask.name))
    with pytest.raises(InputError, match="truncated") as caught:
        validate_datalist(path)
    assert caught.value.source == str(mask)


@pytest.mark.parametrize("spacing, problem", [(0.001, "empty axis"), (1000.0, "voxels")])
def test_absurd_spacing_is_refused_before_anything_is_written(tmp_path, rng, spacing, problem):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1)
    scan = tmp_path / "raw" / "absurd.nii.gz"
    save_nifti(scan, np.zeros((20, 18, 12), np.int16), spaced_affine(spacing=(spacing,) * 3))
    _edit(path, lambda data: data["validation"][0].update(image=scan.name, box=[], label=[], mask=None))
    with pytest.raises(InputError, match=problem) as caught:
        preprocess_datalist(path, tmp_path / "cache", progress=False)
    assert caught.value.source == str(scan)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("other", ["validation", "test"])
def test_a_scan_in_two_splits_is_refused(tmp_path, rng, other):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1)
    _edit(path, lambda data: data.setdefault(other, []).append(dict(data["training"][1])))
    with pytest.raises(InputError, match=f"both the 'training' and the '{other}' split") as caught:
        validate_datalist(path)
    assert caught.value.source.endswith("case1_0000.nii.gz")


def test_a_file_named_only_by_its_extension_is_refused(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=1, validation=0)
    (tmp_path / "raw" / "case0_0000.nii.gz").rename(tmp_path / "raw" / ".nii.gz")
    _edit(path, lambda data: data["training"][0].update(image=".nii.gz"))
    with pytest.raises(InputError, match="no id"):
        validate_datalist(path)


def _rotated_affine(degrees: float) -> np.ndarray:
    affine = spaced_affine(spacing=(1.0, 1.0, 1.25))
    cos, sin = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    affine[:2, :2] = [[cos, -sin], [sin, cos]]
    return affine


@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "boxes_only"])
def test_object_at_the_border_of_an_oblique_scan_is_accepted(tmp_path, with_mask):
    # converted back to voxels, the world box of an object in a corner of a rotated scan sticks out of
    # the grid (the hull of its 8 corners); that is no error, a box whose centre is outside still is
    from shared.boxes.convention import boxes_from_instance_mask, boxes_voxel_to_world
    from shared.io.datalist import write_datalist

    affine = _rotated_affine(45.0)
    mask = np.zeros((20, 18, 12), np.int16)
    mask[0:4, 0:5, 0:3] = 1
    mask[9:12, 8:11, 5:8] = 2
    save_nifti(tmp_path / "case0_0000.nii.gz", np.where(mask > 0, 40, -500).astype(np.int16), affine)
    save_nifti(tmp_path / "case0_mask.nii.gz", mask, affine)
    boxes, _ = boxes_from_instance_mask(mask)
    entry = {"image": str(tmp_path / "case0_0000.nii.gz"), "box": boxes_voxel_to_world(boxes, affine).tolist(),
             "label": [0, 1]}
    if with_mask:
        entry["mask"] = str(tmp_path / "case0_mask.nii.gz")
    path = tmp_path / "datalist.json"
    write_datalist(path, {"training": [entry], "validation": []})
    validate_datalist(path)
    folder = preprocess_datalist(path, tmp_path / "cache", progress=False).cache_dir
    if not with_mask:  # the training boxes are the hulls: they contain the objects (z resampled 1.25 → 1 mm)
        from shared.data.cache import read_case

        cached = read_case(folder, "case0").boxes
        scaled = boxes * np.array([1, 1, 1.25, 1, 1, 1.25])
        assert np.all(cached[:, :3] <= scaled[:, :3] + 1e-3) and np.all(cached[:, 3:] >= scaled[:, 3:] - 1e-3)
    entry["box"][1][0] = -entry["box"][1][0] + 40.0  # x in RAS, not LPS: the centre leaves the scan
    write_datalist(path, {"training": [entry], "validation": []})
    with pytest.raises(InputError, match="box 1 .* outside"):
        validate_datalist(path)
