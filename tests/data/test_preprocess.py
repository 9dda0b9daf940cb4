import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._cases import spaced_affine, write_dataset, write_scan
from shared.boxes.convention import boxes_voxel_to_world
from shared.data.cache import DESCRIPTION_FILE, cache_lock, list_cases, read_case, read_plan
from shared.data.preprocess import preprocess_datalist, preprocess_volume
from shared.data.resample import resample_image, zoom_factors
from shared.io.datalist import read_datalist, write_datalist
from shared.io.errors import InputError
from shared.io.images import load_volume, save_nifti


def _mtimes(cache):
    return {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}


def _run(path, cache, **settings):
    """Preprocess with the default chain; returns the keyed folder holding the cases."""
    return Path(preprocess_datalist(path, cache, progress=False, **settings).cache_dir)


def test_cache_contract_and_world_boxes(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1, affine=spaced_affine(flip_x=True))
    cache = tmp_path / "cache"
    result = preprocess_datalist(path, cache, progress=False)
    assert result.cases == {"training": ["case0", "case1"], "validation": ["case2"]}
    plan, folder = read_plan(cache), Path(result.cache_dir)
    assert plan["target_spacing"] == [1, 1, 1] and plan["spacing_mode"] == "fixed"
    assert plan["classes"] == ["benign", "malignant"] and plan["num_classes"] == 2
    assert sorted(os.listdir(cache)) == sorted(["plans.json", result.key]) and folder.name == result.key
    assert sorted(os.listdir(folder)) == sorted([DESCRIPTION_FILE] + [f"case_case{i}{s}" for i in range(3)
                                                                      for s in (".json", "_image.npy", "_mask.npy")])
    cache = folder
    datalist = read_datalist(path)
    for entry, case_id in zip(datalist["training"] + datalist["validation"], list_cases(cache)):
        case = read_case(cache, case_id)
        assert case.image.dtype == np.float32 and case.image.shape == (1, 14, 14, 15)
        assert case.record["shape"] == [14, 14, 15] and case.original_shape == (20, 18, 12)
        assert case.labels.tolist() == entry["label"] and case.instances.tolist() == [1, 2]
        # boxes come from the resampled mask: within one (1 mm) voxel of the datalist's world boxes
        np.testing.assert_allclose(boxes_voxel_to_world(case.boxes, case.affine), entry["box"], atol=1.0)
        for row, instance in enumerate(case.instances):
            inside = np.argwhere(np.asarray(case.mask) == instance)
            np.testing.assert_array_equal(inside.min(0), case.boxes[row, :3])
            np.testing.assert_array_equal(inside.max(0) + 1, case.boxes[row, 3:])
    assert read_case(cache, "case2").split == "validation"
    # by hand: resample, clip to the plan's percentiles, z-score with its mean and std
    channel = plan["channels"][0]
    volume = load_volume(datalist["training"][0]["image"])
    factors = zoom_factors(volume.spacing, [1, 1, 1])
    expected = (np.clip(resample_image(volume.array, factors), *channel["clip"]) - channel["mean"]) / channel["std"]
    np.testing.assert_allclose(read_case(cache, "case0").image, expected, rtol=1e-5, atol=1e-5)


def test_skip_then_redo_on_plan_change(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=0)
    root = tmp_path / "cache"
    cache = _run(path, root)
    before = _mtimes(cache)
    assert _run(path, root) == cache and _mtimes(cache) == before  # same chain: nothing rewritten
    median = _run(path, root, spacing="median")  # another spacing: other chain arguments, another folder
    assert median != cache and _mtimes(cache) == before
    assert read_plan(root)["spacing_mode"] == "median"
    assert read_case(median, "case0").cache_key == median.name
    assert read_case(median, "case0").shape == (20, 18, 12)  # all cases share one spacing: median keeps the grid
    cache, after = median, _mtimes(median)
    _run(path, root, spacing="median", overwrite=True)
    redone = _mtimes(cache)
    assert redone["case_case0_image.npy"] != after["case_case0_image.npy"]
    # editing one entry's labels leaves the foreground, hence the plan, alone: only that case is redone
    data = json.loads(path.read_text())
    data["training"][1]["label"] = [1 - label for label in data["training"][1]["label"]]
    path.write_text(json.dumps(data))
    _run(path, root, spacing="median")
    now = _mtimes(cache)
    assert now["case_case0_image.npy"] == redone["case_case0_image.npy"] and now["case_case1.json"] != redone["case_case1.json"]
    assert read_case(cache, "case1").labels.tolist() == data["training"][1]["label"]


def test_boxes_only_and_empty_images(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1, with_mask=False)
    data = json.loads(path.read_text())
    data["validation"][0].update(box=[], label=[])
    path.write_text(json.dumps(data))
    cache = _run(path, tmp_path / "cache", spacing=[1.4, 1.6, 2.5])
    assert not list(cache.glob("*_mask.npy"))
    case = read_case(cache, "case0")
    assert case.mask is None and case.instances is None and case.shape == (10, 9, 6)
    np.testing.assert_allclose(boxes_voxel_to_world(case.boxes, case.affine), data["training"][0]["box"], atol=1e-3)
    empty = read_case(cache, "case2")
    assert empty.boxes.shape == (0, 6) and empty.labels.shape == (0,)


def test_preprocess_volume_is_the_cached_path(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=1, validation=0, channels=2)
    data = json.loads(path.read_text())
    data["modality"] = ["CT", "MRI"]
    path.write_text(json.dumps(data))
    cache = tmp_path / "cache"
    cached = read_case(_run(path, cache, num_workers=0), "case0")
    volume = load_volume(read_datalist(path)["training"][0]["image"])
    original = volume.array.copy()
    array, affine = preprocess_volume(volume, read_plan(cache))
    np.testing.assert_array_equal(array, cached.image)
    np.testing.assert_allclose(affine, cached.affine)
    np.testing.assert_array_equal(volume.array, original)  # the caller's scan is left alone
    assert abs(float(array[1].mean())) < 1e-4 and float(array[1].std()) == pytest.approx(1, abs=1e-3)


def test_workers_give_the_same_cache(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=0)
    serial, parallel = _run(path, tmp_path / "serial"), _run(path, tmp_path / "parallel", num_workers=2)
    assert serial.name == parallel.name  # the key does not depend on where the cache lies
    for case in ("case0", "case1"):
        np.testing.assert_array_equal(read_case(serial, case).image, read_case(parallel, case).image)


def test_preprocessing_in_this_process_keeps_its_thread_count(tmp_path, rng):
    # the training that follows in the same process must keep every thread it had
    path = write_dataset(tmp_path / "raw", rng=rng, training=1, validation=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _run(path, tmp_path / "cache")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_scans_named_like_cache_files_and_dot_names_are_trained_on(tmp_path, rng):
    # plans.nii.gz used to overwrite plans.json (then KeyError: 'channels'); .dot was dropped silently
    folder = tmp_path / "raw"
    folder.mkdir()
    entries = [write_scan(folder, name, rng=rng, suffix="") for name in ("plans", ".dot", "x_image")]
    path = folder / "datalist.json"
    write_datalist(path, {"training": entries[:2], "validation": entries[2:]})
    result = preprocess_datalist(path, tmp_path / "cache", progress=False)
    assert result.cases == {"training": ["plans", ".dot"], "validation": ["x_image"]}
    assert len(read_plan(tmp_path / "cache")["channels"]) == 1
    cache = Path(result.cache_dir)
    assert list_cases(cache, "training") == [".dot", "plans"] and list_cases(cache, "validation") == ["x_image"]
    assert read_case(cache, "plans").case == "plans" and read_case(cache, ".dot").image.shape[0] == 1


def test_a_second_run_waits_for_the_cache_lock(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=1, validation=0)
    cache = tmp_path / "cache"
    run = threading.Thread(target=preprocess_datalist, args=(path, cache), kwargs=dict(spacing="median", progress=False))
    with cache_lock(cache):  # another run holds the cache
        run.start()
        run.join(timeout=3.0)
        assert run.is_alive() and not any(cache.iterdir())
    run.join(timeout=60.0)
    assert not run.is_alive() and read_plan(cache)["spacing_mode"] == "median"


def test_a_case_copied_from_another_chain_is_refused_on_read(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1)
    fixed = _run(path, tmp_path / "cache")
    other = _run(path, tmp_path / "cache", spacing=[1.4, 1.6, 2.5], splits=("training",))
    for suffix in (".json", "_image.npy", "_mask.npy"):
        (other / f"case_case2{suffix}").write_bytes((fixed / f"case_case2{suffix}").read_bytes())
    with pytest.raises(InputError, match="made with preprocessing .* preprocess again"):
        read_case(other, "case2")


def test_constant_scan_warns_naming_the_file(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=0, with_mask=False)
    scan = tmp_path / "raw" / "flat.nii.gz"
    save_nifti(scan, np.full((20, 18, 12), 7, np.int16), spaced_affine())
    data = json.loads(path.read_text())
    data["training"].append({"image": scan.name, "box": [], "label": []})
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"flat.nii.gz: every voxel is 7\b") as caught:
        _run(path, tmp_path / "cache")
    assert len([w for w in caught if "every voxel" in str(w.message)]) == 1
