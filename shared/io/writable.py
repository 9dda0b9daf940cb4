"""Output locations checked before the work starts, so a read-only folder fails in a second, not after an hour.

A check creates nothing: it walks up to the nearest existing folder and writes (then removes) a
temporary file there, which is the only test that also catches what permission bits do not show
(an immutable folder, a read-only mount, running as root). A path whose parent is a file fails here
too, instead of deep inside a writer.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from shared.io.errors import InputError


def check_writable_folder(folder: str | os.PathLike, *, what: str = "output folder") -> Path:
    """Raise :class:`InputError` naming ``folder`` unless it is, or can be created as, a writable folder.

    Args:
        folder: the folder a tool or bundle will write into (it need not exist yet).
        what: how the message names it (e.g. ``"--out"``).

    Returns:
        ``folder`` as a :class:`Path`.
    """
    folder = Path(folder)
    problem = _problem(folder)
    if problem:
        raise InputError(folder, f"{what} {problem}; choose a writable folder")
    return folder


def check_writable_file(path: str | os.PathLike, *, what: str = "output file") -> Path:
    """Like :func:`check_writable_folder` for a file to be written: the path must not be a folder and its
    folder must be writable.

    Returns:
        ``path`` as a :class:`Path`.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, f"{what} is a folder; give a file name")
    problem = _problem(path.parent)
    if problem:
        raise InputError(path, f"{what} cannot be written: its folder {path.parent} {problem}; choose a "
                               "writable folder")
    return path


def _problem(folder: Path) -> str | None:
    """Why nothing can be written into ``folder``, or None when a test file could be written there."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return "is a file" if existing == folder else f"cannot be created ({existing} is a file, not a folder)"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as error:
        where = "" if existing == folder else f" (its nearest existing parent {existing} is not)"
        return f"is not writable{where}: {error.strerror or error}"
    return None
