"""Bundle weights named in ``large_files.yml`` (path, url, sha256): download with MONAI, then verify.

MONAI's ``download_large_files`` skips the hash check when an entry has no hash, and keeps a file
that is already there only if its hash matches; we require a sha256 on every entry and check every
file again afterwards, deleting one that does not match so that a bad file is never used or kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from shared.checkpoints.safe_load import sha256_file
from shared.io.errors import InputError

LARGE_FILES_NAME = "large_files.yml"


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
