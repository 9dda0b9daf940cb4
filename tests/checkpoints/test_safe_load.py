import collections
import hashlib
import re
from pathlib import Path

import pytest
import torch

from shared.checkpoints.safe_load import read_checkpoint, sha256_file
from shared.io.errors import InputError


class Payload:
    """A class that a weights-only load must refuse."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"abc" * 1_000_000)
    assert sha256_file(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_plain_containers_load(tmp_path):
    path = tmp_path / "plain.pt"
    data = {"weights": collections.OrderedDict(a=torch.ones(2)), "counts": collections.Counter(a=2),
            "ids": {1, 2}, "log": {"losses": [1.0, 0.5]}, "shape": (4, 4)}
    torch.save(data, path)
    loaded = read_checkpoint(path)
    assert torch.equal(loaded["weights"]["a"], torch.ones(2)) and loaded["counts"]["a"] == 2
    assert loaded["ids"] == {1, 2} and loaded["log"] == {"losses": [1.0, 0.5]} and loaded["shape"] == (4, 4)


def test_pickled_object_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"weights": {"a": torch.ones(1)}, "trainer": Payload()}, path)
    with pytest.raises(InputError, match="pickled Python objects") as raised:
        read_checkpoint(path)
    assert raised.value.source == str(path) and "print" in str(raised.value)
    assert "must never run" not in capsys.readouterr().out


def test_foreign_bytes_and_missing_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(InputError, match="not a torch checkpoint"):
        read_checkpoint(path)
    path.write_bytes(b"hello world garbage")  # another byte pattern fails inside torch with a KeyError
    with pytest.raises(InputError, match="not a readable torch checkpoint"):
        read_checkpoint(path)
    with pytest.raises(InputError, match="no such file"):
        read_checkpoint(tmp_path / "absent.pt")


def test_one_sha256_helper_for_files_in_shared_and_tools():
    repository = Path(__file__).resolve().parents[2]
    defined = [f"{path.relative_to(repository)}: {match}"
               for folder in ("shared", "tools") for path in sorted((repository / folder).rglob("*.py"))
               for match in re.findall(r"def (\w*sha256\w*)\(", path.read_text())]
    assert defined == ["shared/checkpoints/safe_load.py: sha256_file"]
