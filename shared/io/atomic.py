"""Outputs appear whole or not at all: write beside the target, then rename over it.

A process killed part-way leaves the previous file untouched and, at worst, a temporary file named
``.<target name>.<random>.tmp<suffixes>`` (or a folder ``.<target name>.<random>.tmp`` for
:func:`save_torch`) beside it; :func:`remove_orphaned_temporaries` deletes those when the next run
starts. Finished files get the permissions an ordinary ``open()`` would give them (``0o666`` less the
umask), not ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

#: the names our temporaries have (see the module docstring)
TEMPORARY_PATTERNS = (".*.tmp*",)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; it replaces ``path`` only if the block succeeds.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.png``) so writers that choose a
    format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        _publish(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_torch(data: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically and reproducibly: the same data gives the same bytes (and sha256).

    ``torch.save`` names the zip archive inside the file after the file's name, so saving under a
    random temporary name would make every file different; the data is saved under the final name in
    a temporary folder beside the target instead, then moved over it.

    Args:
        data: anything ``torch.save`` takes (a state dict, a training checkpoint).
        path: the target file.

    Returns:
        ``path``.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        temporary = folder / path.name
        torch.save(data, temporary)
        _publish(temporary, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically; numpy scalars and arrays are converted."""
    return write_text(path, json.dumps(data, indent=2, default=_to_builtin) + "\n")


def remove_orphaned_temporaries(folder: str | os.PathLike, patterns: Sequence[str] = TEMPORARY_PATTERNS) -> list[Path]:
    """Delete the temporaries that killed atomic writes left in ``folder`` (not in its sub-folders).

    Call it where a run starts writing into a folder it owns; a temporary of a write still in
    progress in another process would be deleted too.

    Args:
        folder: the output folder (need not exist).
        patterns: glob patterns of temporary names; default ours (:data:`TEMPORARY_PATTERNS`).

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    removed = []
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _publish(temporary: Path, path: Path) -> None:
    """Give the finished temporary an ordinary file's permissions and move it over ``path``."""
    os.chmod(temporary, 0o666 & ~_umask())
    os.replace(temporary, path)


def _umask() -> int:
    # os.umask can only be read by setting it; read it from /proc where there is one, so that other
    # threads never create files under a wrong umask in between
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _to_builtin(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
