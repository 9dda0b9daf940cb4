"""Shipping small weights inside a bundle: ``models/<file>`` committed with it, listed with its sha256.

:func:`ship_weights` copies a file into ``<bundle>/models/`` (float tensors optionally stored in half
precision: they load back into a float32 network through ``load_state_dict``), computes its sha256 and
creates or replaces its ``large_files.yml`` entry; the other entries (placeholders of files not shipped)
stay as they are. An encoder manifest (``encoder.json``) is shipped with the weight files it names, and
its recorded sha256 always describe the shipped files. Reading a shipped file later goes through
:func:`shared.checkpoints.large_files.check_shipped_file`, which refuses one that no longer matches.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from shared.checkpoints.large_files import MODELS_FOLDER, read_large_files, write_large_file_entry
from shared.checkpoints.manifest import FORMAT_NAME, MANIFEST_NAME
from shared.checkpoints.safe_load import read_checkpoint, sha256_file
from shared.io.atomic import save_torch, write_json
from shared.io.errors import InputError

WEIGHT_SUFFIXES = (".pt", ".pth")
MANIFEST_FILE_ENTRIES = ("weights", "stems")


def half_precision(state: Any) -> Any:
    """The same state dict (or nested containers) with every float32/float64 tensor in float16.

    Integer buffers (counters, indices) and tensors already in 16 bits are kept as they are.
    """
    if isinstance(state, torch.Tensor):
        return state.half() if state.dtype in (torch.float32, torch.float64) else state
    if isinstance(state, dict):
        return {key: half_precision(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(half_precision(value) for value in state)
    return state


def ship_weights(bundle_dir: str | os.PathLike, file: str | os.PathLike, *, as_name: str | None = None,
                 half: bool = False, url: str | None = None) -> list[Path]:
    """Copies ``file`` into the bundle's ``models/`` and lists it in ``large_files.yml`` with its sha256.

    Args:
        bundle_dir: the bundle's root folder (holding ``configs/`` and ``large_files.yml``).
        file: a weight file (``.pt``), a model plan or any file the bundle reads, or an encoder
            manifest (``encoder.json``: the weight files it names are shipped with it).
        as_name: the path inside the bundle, ``models/<name>``; default ``models/<file's name>``.
        half: store float tensors in float16 (weight files only).
        url: where the file can be downloaded from; default its path in the repository
            (``bundles/<bundle>/models/<name>``), since it is committed with the bundle. For an
            encoder manifest, its weight files are listed beside it (same URL folder).

    Returns:
        The shipped files, the named one last.
    """
    bundle_dir, file = Path(bundle_dir), Path(file)
    if not (bundle_dir / "configs").is_dir():
        raise InputError(bundle_dir, "is not a bundle (no configs/ folder): give a folder under bundles/")
    if not file.is_file():
        raise InputError(file, "no such file to ship")
    target = _target(file, as_name)
    manifest = _encoder_manifest(file)
    if manifest is not None:
        return _ship_encoder(bundle_dir, file, manifest, target, half=half, url=url)
    shipped = _ship_file(bundle_dir, file, target, half=half, url=url)
    return [*_update_bundle_manifest(bundle_dir, target, url=url), shipped]


def _target(file: Path, as_name: str | None) -> str:
    target = as_name or f"{MODELS_FOLDER}/{file.name}"
    parts = Path(target).parts
    if len(parts) != 2 or parts[0] != MODELS_FOLDER or Path(target).is_absolute():
        raise InputError(target, f"--as must be {MODELS_FOLDER}/<name>: shipped weights live in the bundle's "
                                 f"{MODELS_FOLDER}/ folder")
    return target


def _encoder_manifest(file: Path) -> dict[str, Any] | None:
    if file.suffix != ".json":
        return None
    try:
        content = json.loads(file.read_text())
    except ValueError as error:
        raise InputError(file, f"is not readable JSON ({error})") from None
    return content if isinstance(content, dict) and content.get("format") == FORMAT_NAME else None


def _default_url(bundle_dir: Path, target: str) -> str:
    return f"bundles/{bundle_dir.resolve().name}/{target}"


def _ship_file(bundle_dir: Path, file: Path, target: str, *, half: bool, url: str | None) -> Path:
    destination = bundle_dir / target
    destination.parent.mkdir(parents=True, exist_ok=True)
    if half and file.suffix not in WEIGHT_SUFFIXES:
        raise InputError(file, f"--half applies to weight files ({', '.join(WEIGHT_SUFFIXES)}), not to this file")
    if half:
        save_torch(half_precision(read_checkpoint(file)), destination)
    elif file.resolve() != destination.resolve():
        shutil.copyfile(file, destination)
    write_large_file_entry(bundle_dir, target, url or _default_url(bundle_dir, target), sha256_file(destination))
    return destination


def _ship_encoder(bundle_dir: Path, manifest_file: Path, manifest: dict[str, Any], target: str, *, half: bool,
                  url: str | None) -> list[Path]:
    if Path(target).name != MANIFEST_NAME:
        raise InputError(target, f"an encoder manifest ships as {MODELS_FOLDER}/{MANIFEST_NAME} (the bundles and "
                                 "the fine-tuning configs look for that name)")
    shipped = []
    for key in MANIFEST_FILE_ENTRIES:
        entry = manifest.get(key)
        if not entry:
            continue
        if not isinstance(entry, dict) or "file" not in entry:
            raise InputError(manifest_file, f"'{key}' must name a 'file' and its 'sha256'")
        source = manifest_file.parent / entry["file"]
        if not source.is_file():
            raise InputError(manifest_file, f"the {key} file {source} it names does not exist")
        if sha256_file(source) != entry.get("sha256"):
            raise InputError(source, f"does not match the sha256 that {manifest_file} records: refusing to ship it")
        weight_target = f"{MODELS_FOLDER}/{Path(entry['file']).name}"
        weight_url = None if url is None else f"{url.rsplit('/', 1)[0]}/{Path(entry['file']).name}"
        shipped.append(_ship_file(bundle_dir, source, weight_target, half=half, url=weight_url))
        manifest[key] = {**entry, "file": Path(entry["file"]).name, "sha256": sha256_file(shipped[-1])}
        if half:
            manifest[key]["stored_as"] = "float16"
    write_json(bundle_dir / target, manifest)
    write_large_file_entry(bundle_dir, target, url or _default_url(bundle_dir, target), sha256_file(bundle_dir / target))
    return [*shipped, bundle_dir / target]


def _update_bundle_manifest(bundle_dir: Path, target: str, *, url: str | None) -> list[Path]:
    """Re-records the sha256 of ``target`` in the bundle's shipped ``encoder.json`` when it names that file."""
    manifest_path = bundle_dir / MODELS_FOLDER / MANIFEST_NAME
    if not manifest_path.is_file() or Path(target).name == MANIFEST_NAME:
        return []
    manifest = json.loads(manifest_path.read_text())
    changed = False
    for key in MANIFEST_FILE_ENTRIES:
        entry = manifest.get(key)
        if isinstance(entry, dict) and entry.get("file") == Path(target).name:
            entry["sha256"] = sha256_file(bundle_dir / target)
            changed = True
    if not changed:
        return []
    write_json(manifest_path, manifest)
    manifest_target = f"{MODELS_FOLDER}/{MANIFEST_NAME}"
    listed = {entry["path"]: entry["url"] for entry in read_large_files(bundle_dir)}
    write_large_file_entry(bundle_dir, manifest_target, listed.get(manifest_target) or url
                           or _default_url(bundle_dir, manifest_target), sha256_file(manifest_path))
    return [manifest_path]
