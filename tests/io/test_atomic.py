"""Atomic outputs: whole or nothing, ordinary permissions, reproducible torch files, orphans cleaned."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from shared.checkpoints.safe_load import sha256_file
from shared.io.atomic import atomic_path, remove_orphaned_temporaries, save_torch, write_json


@pytest.fixture
def umask():
    def set_umask(mask: int) -> None:
        os.umask(mask)

    previous = os.umask(0o022)
    yield set_umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask, mask):
    umask(mask)
    write_json(tmp_path / "datalist.json", {"a": 1})
    save_torch({"w": torch.ones(2)}, tmp_path / "model.pt")
    with atomic_path(tmp_path / "image.nii.gz") as temporary:
        temporary.write_bytes(b"x")
    for name in ("datalist.json", "model.pt", "image.nii.gz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


def test_a_failed_write_keeps_the_previous_file_and_leaves_nothing(tmp_path):
    write_json(tmp_path / "out.json", {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.json") as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "out.json").read_text() == '{\n  "version": 1\n}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.json"]


def test_saving_the_same_state_dict_twice_gives_the_same_sha256(tmp_path):
    state = {"layer.weight": torch.arange(12.0).reshape(3, 4), "layer.bias": torch.zeros(3)}
    save_torch(state, tmp_path / "a" / "model.pt")
    save_torch(state, tmp_path / "b" / "model.pt")
    assert sha256_file(tmp_path / "a" / "model.pt") == sha256_file(tmp_path / "b" / "model.pt")
    loaded = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert torch.equal(loaded["layer.weight"], state["layer.weight"])
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == ["model.pt"]


def test_orphaned_temporaries_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".model.pt.abc123.tmp.pt").write_bytes(b"half")
    (tmp_path / ".encoder.json.x1y2.tmp.json").write_text("{")
    (tmp_path / ".model_final.pt.q9.tmp").mkdir()
    (tmp_path / ".model_final.pt.q9.tmp" / "model_final.pt").write_bytes(b"half")
    (tmp_path / "tmpab12cd.pt").write_bytes(b"ignite's")
    keep = ["model.pt", "notes.tmp.txt", "tmp_results.json", ".hidden"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".x.pt.r.tmp.pt").write_text("not ours to clean")

    removed = remove_orphaned_temporaries(tmp_path)
    assert sorted(path.name for path in removed) == [".encoder.json.x1y2.tmp.json", ".model.pt.abc123.tmp.pt",
                                                     ".model_final.pt.q9.tmp"]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(keep + ["sub", "tmpab12cd.pt"])
    assert remove_orphaned_temporaries(tmp_path, patterns=["tmp*.pt"]) == [tmp_path / "tmpab12cd.pt"]
    assert remove_orphaned_temporaries(tmp_path / "missing") == []
