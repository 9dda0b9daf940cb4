import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.data.cache import case_files, case_is_current, entry_digest, list_cases, read_case, read_plan, write_case
from shared.io.atomic import write_json
from shared.io.errors import InputError


ENTRY = {"image": "a.nii.gz", "mask": "m.nii.gz", "box": [[1, 2, 3, 4, 5, 6]], "label": [1]}


def _record(case, split="training", mask="m.nii.gz"):
    return {"entry_sha256": entry_digest(ENTRY), "case": case, "split": split, "image": "a.nii.gz", "mask": mask, "boxes": [[1, 2, 3, 4, 5, 6]],
            "labels": [1], "instances": [3] if mask else None, "shape": [4, 5, 6], "affine": np.eye(4),
            "original_affine": np.eye(4), "original_shape": [4, 5, 6], "cache_key": "abc"}


def test_write_read_round_trip(tmp_path, rng):
    image = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    mask = np.zeros((4, 5, 6), np.int16)
    mask[1:4, 2:5, 3:6] = 3
    write_case(tmp_path, _record("a"), image, mask)
    write_case(tmp_path, _record("b", "validation", mask=None), image, None)
    assert list_cases(tmp_path) == ["a", "b"] and list_cases(tmp_path, "validation") == ["b"]
    case = read_case(tmp_path, "a")
    assert isinstance(case.image, np.memmap) and case.image.flags.c_contiguous
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.mask, mask)
    assert case.mask.dtype == np.int16 and case.shape == (4, 5, 6)
    assert case.boxes.shape == (1, 6) and case.labels.tolist() == [1] and case.instances.tolist() == [3]
    assert read_case(tmp_path, "b").mask is None and read_case(tmp_path, "b").instances is None
    assert read_plan(tmp_path) is None
    assert not list(tmp_path.glob(".*"))


def test_current_and_stale(tmp_path):
    write_case(tmp_path, _record("a"), np.zeros((1, 4, 5, 6), np.float32), np.zeros((4, 5, 6), np.int16))
    assert case_is_current(tmp_path, "a", "abc", split="training", entry=ENTRY)
    assert not case_is_current(tmp_path, "a", "new", split="training", entry=ENTRY)
    assert not case_is_current(tmp_path, "a", "abc", split="validation", entry=ENTRY)
    assert not case_is_current(tmp_path, "a", "abc", split="training", entry=dict(ENTRY, label=[0]))
    case_files(tmp_path, "a").mask.unlink()
    assert not case_is_current(tmp_path, "a", "abc", split="training", entry=ENTRY)


def test_missing_case_and_broken_plan(tmp_path):
    with pytest.raises(InputError, match="run preprocessing"):
        read_case(tmp_path, "nothing")
    (tmp_path / "plans.json").write_text("{")
    with pytest.raises(InputError, match="plans.json"):
        read_plan(tmp_path)
    assert list_cases(tmp_path) == []  # plans.json is not a case


def test_case_names_cannot_collide_with_the_cache_files(tmp_path):
    # a scan named plans.nii.gz used to overwrite plans.json; a dot-name used to vanish from the listing
    write_json(tmp_path / "plans.json", {"channels": [], "hash": "abc"})
    image = np.zeros((1, 4, 5, 6), np.float32)
    for case in ("plans", ".hidden", "a_image", "a"):
        write_case(tmp_path, _record(case, mask=None), image, None)
    assert read_plan(tmp_path) == {"channels": [], "hash": "abc"}
    assert list_cases(tmp_path) == [".hidden", "a", "a_image", "plans"]
    assert read_case(tmp_path, "plans").case == "plans" and read_case(tmp_path, ".hidden").case == ".hidden"


def test_a_case_of_another_chain_is_refused(tmp_path):
    write_case(tmp_path, _record("a"), np.zeros((1, 4, 5, 6), np.float32), np.zeros((4, 5, 6), np.int16))
    write_json(tmp_path / "preprocessing.json", {"key": "abc"})
    assert read_case(tmp_path, "a").cache_key == "abc"
    write_json(tmp_path / "preprocessing.json", {"key": "other"})  # a case copied into another chain's folder
    with pytest.raises(InputError, match="made with preprocessing abc.*preprocess again") as caught:
        read_case(tmp_path, "a")
    assert caught.value.source.endswith(".json") and "a" in caught.value.source


def _rank_zero_first_worker(rank: int, folder: str) -> None:
    import torch.distributed as dist

    from shared.data.cache import rank_zero_first

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        marker = Path(folder) / "written_by_rank_0"
        with rank_zero_first():
            if rank == 0:
                time.sleep(0.5)  # a rank that did not wait would look before this
                marker.write_text("done")
            else:
                assert marker.read_text() == "done"
                (Path(folder) / "rank_1_found_it").touch()
    finally:
        dist.destroy_process_group()


def test_under_torch_distributed_rank_0_works_first_and_the_others_wait(tmp_path):
    torch.multiprocessing.spawn(_rank_zero_first_worker, args=(str(tmp_path),), nprocs=2, join=True)
    assert (tmp_path / "rank_1_found_it").exists()
