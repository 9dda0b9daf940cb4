"""Output locations that cannot be written, as a user meets them: below a file, or an immutable folder."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


def below_a_file(tmp_path: Path) -> Path:
    """A folder path whose parent is a plain file (fails for every user, root included)."""
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path / "a_file" / "out"


@contextlib.contextmanager
def unwritable_folder(folder: Path) -> Iterator[Path]:
    """``folder`` made unwritable for this process: immutable for root (who ignores permission bits),
    read-only otherwise; skips the test where neither holds (a file system without attributes)."""
    folder.mkdir(parents=True, exist_ok=True)
    immutable = os.geteuid() == 0
    if immutable:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i not supported here: {done.stderr.decode().strip()}")
    else:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)
