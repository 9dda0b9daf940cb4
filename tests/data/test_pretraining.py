"""Pre-training data: folder → datalist, unlabelled splits → a per-image z-scored cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.data.cache import case_files, read_case, read_plan
from shared.data.dataset import DetectionPatchDataset
from shared.data.normalize import normalize_image
from shared.data.pretraining import plan_pretraining, prepare_pretraining_data, write_folder_datalist
from shared.data.transforms_chains import pretraining_chain, training_chain
from shared.io.datalist import read_datalist, write_datalist
from shared.io.errors import InputError
from shared.io.images import save_nifti


def _scan(path: Path, rng, shape=(12, 10, 8), spacing=(2.0, 2.0, 2.0), offset=-500.0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = rng.normal(offset, 200.0, size=shape).astype(np.float32)
    save_nifti(path, array, np.diag([*spacing, 1.0]))
    return str(path)


def test_per_image_flag_z_scores_ct_with_the_scans_own_statistics(rng):
    array = rng.normal(-300, 50, size=(1, 6, 6, 6)).astype(np.float32)
    spec = [{"modality": "CT", "clip": [-1000.0, 1000.0], "mean": 0.0, "std": 1000.0, "per_image": True}]
    out = normalize_image(array, spec)
    np.testing.assert_allclose(out[0], (array[0] - array[0].mean()) / array[0].std(), rtol=1e-4, atol=1e-5)
    without = normalize_image(array, [{**spec[0], "per_image": False}])
    np.testing.assert_allclose(without[0], array[0] / 1000.0, rtol=1e-5)


def test_folder_datalist_lists_every_scan_recursively(tmp_path, rng):
    _scan(tmp_path / "scans" / "a.nii.gz", rng)
    _scan(tmp_path / "scans" / "deep" / "b.nii.gz", rng)
    (tmp_path / "scans" / "notes.txt").write_text("not a scan")
    path = write_folder_datalist(tmp_path / "scans", tmp_path / "out" / "datalist.json", modality="MRI")
    content = read_datalist(path)
    assert [Path(entry["image"]).name for entry in content["unlabelled"]] == ["a.nii.gz", "b.nii.gz"]
    assert content["modality"] == "MRI" and not content["training"]
    flat = write_folder_datalist(tmp_path / "scans", tmp_path / "flat.json", recursive=False)
    assert len(read_datalist(flat)["unlabelled"]) == 1


def test_folder_without_scans_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no scan"):
        write_folder_datalist(tmp_path / "empty", tmp_path / "datalist.json")
    with pytest.raises(InputError, match="is not a folder"):
        write_folder_datalist(tmp_path / "missing", tmp_path / "datalist.json")


def _datalist(tmp_path, rng) -> Path:
    box = {"box": [[0.0, 0.0, 0.0, 4.0, 4.0, 4.0]], "label": [0]}
    return write_datalist(tmp_path / "datalist.json", {
        "modality": "CT", "classes": ["nodule"],
        "training": [{"image": _scan(tmp_path / "tr.nii.gz", rng, offset=300.0), **box}],
        "unlabelled": [{"image": _scan(tmp_path / f"un{index}.nii.gz", rng)} for index in range(2)]})


def _prepare(datalist, cache, **settings):
    plan = plan_pretraining(datalist, cache, **settings)
    return prepare_pretraining_data(datalist, cache, preprocessing=pretraining_chain(plan), plan=plan, progress=False)


def test_unlabelled_cases_are_resampled_and_z_scored_per_image(tmp_path, rng):
    data = _prepare(_datalist(tmp_path, rng), tmp_path / "cache", spacing=[1.0, 1.0, 1.0])
    assert data.cases == ["un0", "un1"] and data.splits == ["unlabelled"]
    assert data.in_channels == 1 and data.modality == ["CT"]
    plan = read_plan(tmp_path / "cache")
    assert plan == data.plan and plan["channels"][0]["per_image"] is True
    for case in data.cases:
        cached = read_case(data.cache_dir, case)
        assert cached.shape == (24, 20, 16) and len(cached.boxes) == 0 and cached.mask is None
        assert abs(float(cached.image.mean())) < 1e-4 and float(cached.image.std()) == pytest.approx(1.0, abs=1e-3)


def test_labelled_images_join_without_their_labels_and_reruns_skip(tmp_path, rng):
    datalist = _datalist(tmp_path, rng)
    data = _prepare(datalist, tmp_path / "cache", include_labelled=True)
    assert sorted(data.cases) == ["tr", "un0", "un1"]
    assert len(read_case(data.cache_dir, "tr").boxes) == 0
    stamp = case_files(data.cache_dir, "tr").image.stat().st_mtime_ns
    assert _prepare(datalist, tmp_path / "cache", include_labelled=True).cache_dir == data.cache_dir
    assert case_files(data.cache_dir, "tr").image.stat().st_mtime_ns == stamp


def test_patches_without_boxes_come_from_the_cache(tmp_path, rng):
    data = _prepare(_datalist(tmp_path, rng), tmp_path / "cache")
    chain = training_chain(8, batch_size=2, foreground_fraction=0.0)
    dataset = DetectionPatchDataset(data.cache_dir, data.cases, chain, iterations_per_epoch=2, batch_size=2)
    sample = dataset[3]
    assert tuple(sample["image"].shape) == (1, 8, 8, 8) and len(sample["boxes"]) == 0


def test_empty_splits_are_an_input_error(tmp_path, rng):
    datalist = write_datalist(tmp_path / "datalist.json", {"training": [{"image": _scan(tmp_path / "a.nii.gz", rng)}]})
    with pytest.raises(InputError, match="no scan to pre-train on"):
        _prepare(datalist, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    assert json.loads(Path(datalist).read_text())["training"]
