"""Bundle weights named in ``large_files.yml`` (path, url, sha256): download with MONAI, then verify.

MONAI's ``download_large_files`` skips the hash check when an entry has no hash, and keeps a file
that is already there only if its hash matches; we require a sha256 on every entry and check every
file again afterwards, deleting one that does not match so that a bad file is never used or kept.

A bundle may also ship small weights in its own ``models/`` folder (committed with it, see
``tools.ship_weights``). Reading any weight file from a bundle's ``models/`` goes through
:func:`check_shipped_file`: a listed file whose sha256 differs from the listing is refused (and kept,
since it may be the user's own file). An all-zero sha256 marks a file that is not published yet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from shared.checkpoints.safe_load import sha256_file
from shared.io.atomic import write_text
from shared.io.errors import InputError

LARGE_FILES_NAME = "large_files.yml"
MODELS_FOLDER = "models"
PLACEHOLDER_HASH = "0" * 64
HEADER = ("# The bundle's weights: path inside the bundle, where to get the file, its sha256. An entry whose file\n"
          "# is in the bundle's models/ folder is shipped with the bundle (tools.ship_weights writes it); an\n"
          "# all-zero sha256 marks a file that is not published yet. Download and verify with\n"
          "# shared.checkpoints.large_files.fetch_large_files; a shipped file is verified whenever it is read.\n")


def read_large_files(bundle_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads and checks the entries of ``<bundle_dir>/large_files.yml``.

    Args:
        bundle_dir: the bundle's root folder.

    Returns:
        Entries ``{path, url, hash_val, hash_type}``, each with a sha256.
    """
    listing = Path(bundle_dir) / LARGE_FILES_NAME
    if not listing.is_file():
        raise InputError(listing, "no such file: a bundle names its weights in large_files.yml")
    try:
        entries = (yaml.safe_load(listing.read_text()) or {}).get("large_files")
    except (yaml.YAMLError, AttributeError) as error:
        raise InputError(listing, f"is not a YAML mapping with 'large_files' ({error})") from None
    if not isinstance(entries, list):
        raise InputError(listing, "'large_files' must be a list of {path, url, hash_val, hash_type}")
    for number, entry in enumerate(entries):
        missing = [key for key in ("path", "url", "hash_val") if not (isinstance(entry, dict) and entry.get(key))]
        if missing:
            raise InputError(listing, f"entry {number} lacks {missing}: every weight needs a path, a url and a sha256")
        if str(entry.get("hash_type", "sha256")).lower() != "sha256":
            raise InputError(listing, f"entry {number} ({entry['path']}): hash_type must be sha256")
        if Path(entry["path"]).is_absolute() or ".." in Path(entry["path"]).parts:
            raise InputError(listing, f"entry {number}: path {entry['path']!r} must stay inside the bundle")
    return entries


def verify_large_files(bundle_dir: str | os.PathLike, entries: list[dict[str, Any]]) -> list[Path]:
    """Checks every listed file's sha256, deleting and refusing one that differs.

    Args:
        bundle_dir: the bundle's root folder.
        entries: from ``read_large_files``.

    Returns:
        Paths of the verified files.
    """
    verified = []
    for entry in entries:
        path = Path(bundle_dir) / entry["path"]
        if not path.is_file():
            raise InputError(path, f"was not downloaded from {entry['url']}")
        found = sha256_file(path)
        if found != str(entry["hash_val"]).lower():
            path.unlink()
            raise InputError(path, f"sha256 {found} differs from {entry['hash_val']} listed in {LARGE_FILES_NAME}; "
                                   "the file was deleted. Download it again or fix the listing")
        verified.append(path)
    return verified


def fetch_large_files(bundle_dir: str | os.PathLike) -> list[Path]:
    """Downloads a bundle's large files (``http(s)://`` or ``file://`` URLs) and verifies every sha256.

    Args:
        bundle_dir: the bundle's root folder, holding ``large_files.yml``.

    Returns:
        Paths of the verified files.
    """
    from monai.apps.utils import HashCheckError
    from monai.bundle import download_large_files

    entries = read_large_files(bundle_dir)
    try:
        # large_file_name must stay None: MONAI 1.6.1 only finds the listing itself in that case
        download_large_files(bundle_path=str(bundle_dir))
    except HashCheckError as error:
        for entry in entries:
            path = Path(bundle_dir) / entry["path"]
            if path.is_file() and sha256_file(path) != str(entry["hash_val"]).lower():
                path.unlink()
        raise InputError(Path(bundle_dir) / LARGE_FILES_NAME,
                         f"a downloaded file failed its sha256 check and was removed ({error})") from None
    except OSError as error:
        raise InputError(Path(bundle_dir) / LARGE_FILES_NAME, f"download failed ({error})") from None
    return verify_large_files(bundle_dir, entries)


def check_shipped_file(path: str | os.PathLike) -> None:
    """Refuses a weight file in a bundle's ``models/`` whose sha256 differs from its ``large_files.yml`` entry.

    Files outside a ``models/`` folder, bundles without a listing, files the listing does not name and
    placeholder entries (all-zero sha256) are not checked.

    Args:
        path: the weight file about to be read.

    Raises:
        InputError: naming the file, both hashes and what to do, when the file was changed or replaced.
    """
    path = Path(path).absolute()
    if path.parent.name != MODELS_FOLDER or not (path.parent.parent / LARGE_FILES_NAME).is_file():
        return
    bundle = path.parent.parent
    for entry in read_large_files(bundle):
        if (bundle / entry["path"]).absolute() != path:
            continue
        expected = str(entry["hash_val"]).lower()
        if expected == PLACEHOLDER_HASH:
            return
        found = sha256_file(path)
        if found != expected:
            raise InputError(path, f"sha256 {found} differs from {expected} that {bundle / LARGE_FILES_NAME} lists "
                                   "for this shipped file: it was changed or replaced. Restore it (git checkout), "
                                   "ship the new file with python -m tools.ship_weights, or give your own model "
                                   "with --model_dir")
        return


def write_large_file_entry(bundle_dir: str | os.PathLike, path: str, url: str, sha256: str) -> Path:
    """Creates or replaces the ``large_files.yml`` entry of ``path``; the other entries stay as they are.

    Args:
        bundle_dir: the bundle's root folder.
        path: the file's path inside the bundle (``models/model.pt``).
        url: where the file comes from.
        sha256: its sha256 (64 hex digits).

    Returns:
        Path of the listing.
    """
    listing = Path(bundle_dir) / LARGE_FILES_NAME
    entries = read_large_files(bundle_dir) if listing.is_file() else []
    entry = {"path": path, "url": url, "hash_val": sha256.lower(), "hash_type": "sha256"}
    replaced = [entry if existing["path"] == path else existing for existing in entries]
    if entry not in replaced:
        replaced.append(entry)
    lines = [HEADER.rstrip("\n"), "large_files:"]
    for item in replaced:
        values = [(key, item[key]) for key in ("path", "url", "hash_val", "hash_type") if key in item]
        values += [(key, value) for key, value in item.items() if key not in ("path", "url", "hash_val", "hash_type")]
        for number, (key, value) in enumerate(values):
            lines.append(f"{'  - ' if number == 0 else '    '}{key}: {json.dumps(str(value))}")
    return write_text(listing, "\n".join(lines) + "\n")
