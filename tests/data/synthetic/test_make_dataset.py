import json
from pathlib import Path

import numpy as np
import pytest

from shared.boxes.convention import boxes_from_instance_mask, boxes_voxel_to_world
from shared.data.synthetic.dataset import SPLITS, TASKS, make_case, make_dataset
from shared.io.datalist import entry_boxes, read_datalist
from shared.io.errors import InputError
from shared.io.images import load_label_map, load_volume
from tools.make_dataset import main as make_dataset_cli


def test_cli_writes_every_output(tiny_lung):
    out, datalist_path = tiny_lung
    assert Path(datalist_path) == out / "datalist.json"
    data = read_datalist(datalist_path)  # validates boxes, labels and paths
    assert [len(data[s]) for s in ("training", "validation", "test", "unlabelled")] == [4, 1, 2, 1]
    assert data["classes"] == ["benign", "malignant"] and data["modality"] == "CT"
    assert data["task"] == "lung_ct" and data["seed"] == 0 and data["preset"] == "quick"
    assert "LIDC-IDRI" in data["credits"] and "CC BY 3.0" in data["credits"]
    assert len(list((out / "imagesTr").glob("*_0000.nii.gz"))) == 7
    assert len(list((out / "imagesUnlabelled").glob("*.nii.gz"))) == 1
    assert len(list((out / "labelsTr").glob("*.nii.gz"))) == 7
    assert len(list((out / "previews").glob("lung_ct_*.png"))) == 7 and (out / "previews" / "overview.png").exists()
    raw = json.loads(Path(datalist_path).read_text())["unlabelled"][0]
    assert set(raw) == {"image"} and raw["image"].startswith("imagesUnlabelled/")


def test_every_box_matches_its_mask_and_classes_are_known(tiny_lung, tiny_sizes):
    out, datalist_path = tiny_lung
    data = read_datalist(datalist_path)
    labelled = data["training"] + data["validation"] + data["test"]
    for entry in labelled:
        volume = load_volume(entry["image"])
        mask = load_label_map(entry["mask"], like=volume)
        boxes, ids = boxes_from_instance_mask(mask)
        written, labels = entry_boxes(entry)
        assert entry["instances"] == ids.tolist()
        np.testing.assert_allclose(written, boxes_voxel_to_world(boxes, volume.affine), atol=1e-3)
        assert set(labels.tolist()) <= {0, 1} and len(labels) == len(written)
        assert volume.array.shape == (1, *tiny_sizes["shape"])
    assert any(len(e["box"]) == 0 for e in labelled), "an empty scan is part of every data set"
    assert len(data["training"][3]["box"]) == 0
    assert any(len(e["box"]) for e in labelled)


def test_same_seed_same_bytes_other_seed_other_data(tiny_lung, tiny_sizes, tmp_path):
    out, _ = tiny_lung
    small = dict(num_training=1, num_validation=0, num_test=0, num_unlabelled=0, shape=tiny_sizes["shape"],
                 previews=False)
    make_dataset_cli("lung_ct", str(tmp_path / "same"), seed=0, **small)
    make_dataset_cli("lung_ct", str(tmp_path / "other"), seed=1, **small)
    name = "imagesTr/lung_ct_tr_000_0000.nii.gz"
    assert (tmp_path / "same" / name).read_bytes() == (out / name).read_bytes()
    mask = "labelsTr/lung_ct_tr_000.nii.gz"
    assert (tmp_path / "same" / mask).read_bytes() == (out / mask).read_bytes()
    assert (tmp_path / "other" / name).read_bytes() != (out / name).read_bytes()
    first = json.loads((tmp_path / "same" / "datalist.json").read_text())["training"][0]
    assert first == json.loads((out / "datalist.json").read_text())["training"][0]


def test_case_does_not_depend_on_other_splits_sizes():
    one = make_case("lung_ct", "test", 1, seed=3, shape=(32, 32, 20))
    two = make_case("lung_ct", "test", 1, seed=3, shape=(32, 32, 20))
    np.testing.assert_array_equal(one.image, two.image)
    assert not np.array_equal(one.image, make_case("lung_ct", "training", 1, seed=3, shape=(32, 32, 20)).image)


def test_brain_dataset_has_two_channels_on_one_grid(tmp_path):
    path = make_dataset("brain_mri", tmp_path, counts=dict(training=1, validation=0, test=0, unlabelled=0),
                        shape=(32, 40, 24), progress=False)
    data = read_datalist(path)
    entry = data["training"][0]
    assert isinstance(entry["image"], list) and len(entry["image"]) == 2
    assert data["modality"] == ["MRI", "MRI"] and data["channels"] == ["T1c", "FLAIR"]
    assert data["classes"] == ["metastasis"] and "MNI" in data["credits"]
    volume = load_volume(entry["image"])  # raises if the channels' grids differ
    assert volume.array.shape == (2, 32, 40, 24)
    assert len(entry["box"]) >= 1 and (tmp_path / "previews" / "brain_mri_tr_000.png").exists()


def test_unknown_task_or_preset_is_a_user_error(tmp_path):
    with pytest.raises(InputError, match="unknown task"):
        make_dataset("liver", tmp_path)
    with pytest.raises(InputError, match="unknown preset"):
        make_dataset("lung_ct", tmp_path, preset="huge")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["lung_ct", "brain_mri"])
def test_full_preset_makes_scan_sized_cases(task):
    from shared.data.synthetic.dataset import TASKS

    shape, spacing = TASKS[task].grids["full"]
    case = make_case(task, "training", 0, preset="full")
    assert case.image.shape[1:] == shape and case.instances.shape == shape
    np.testing.assert_allclose(np.diag(case.affine)[:3], spacing)
    assert case.instances.max() == len(case.labels) >= 1


@pytest.mark.slow
def test_parallel_workers_write_the_same_bytes(tmp_path):
    counts = dict(training=3, validation=0, test=0, unlabelled=1)
    for workers in (1, 2):
        make_dataset("lung_ct", tmp_path / str(workers), counts=counts, shape=(40, 40, 24), workers=workers,
                     progress=False)
    files = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*") if p.is_file())
    assert len(files) == 12  # 3 images, 3 masks, 1 unlabelled, 3 previews, overview, datalist
    for name in files:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


def test_every_preset_has_a_count_per_split():
    for spec in TASKS.values():
        assert spec.counts.keys() == spec.grids.keys(), spec.name
        assert all(len(counts) == len(SPLITS) for counts in spec.counts.values()), spec.name


def test_lung_nodules_is_lung_ct_with_every_nodule_in_one_class():
    for split, index in (("training", 0), ("test", 1)):
        scans, nodules = (make_case(task, split, index, shape=(40, 40, 24)) for task in ("lung_ct", "lung_nodules"))
        assert np.array_equal(scans.image, nodules.image) and np.array_equal(scans.instances, nodules.instances)
        assert nodules.labels == [0] * len(scans.labels) and len(scans.labels) > 0
    assert TASKS["lung_nodules"].classes == ("nodule",)
