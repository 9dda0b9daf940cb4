import pytest

from shared.io.errors import InputError
from shared.io.writable import check_writable_file, check_writable_folder
from tests.tools._unwritable import below_a_file, unwritable_folder


def test_a_writable_folder_passes_and_nothing_is_created(tmp_path):
    assert check_writable_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_writable_file(tmp_path / "new" / "p.json") == tmp_path / "new" / "p.json"
    assert list(tmp_path.iterdir()) == []  # no folder made, no test file left


def test_a_folder_below_a_file_is_refused_naming_both(tmp_path):
    blocked = below_a_file(tmp_path)
    with pytest.raises(InputError, match=r"deeper: output folder cannot be created \(.*a_file is a file"):
        check_writable_folder(blocked / "deeper")
    with pytest.raises(InputError, match="a_file: --out is a file"):
        check_writable_folder(tmp_path / "a_file", what="--out")
    with pytest.raises(InputError, match="p.json: --out cannot be written: its folder .*a_file is a file"):
        check_writable_file(tmp_path / "a_file" / "p.json", what="--out")
    with pytest.raises(InputError, match="is a folder; give a file name"):
        check_writable_file(tmp_path)


def test_an_unwritable_folder_is_refused(tmp_path):
    with unwritable_folder(tmp_path / "locked") as locked:
        with pytest.raises(InputError, match="locked: output folder is not writable"):
            check_writable_folder(locked)
        with pytest.raises(InputError, match=r"sub: output folder is not writable \(its nearest existing parent"):
            check_writable_folder(locked / "sub")
        assert list(locked.iterdir()) == []
