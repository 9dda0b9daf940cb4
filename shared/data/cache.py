"""The preprocessed cache: the one reader and writer of its files.

A cache root (a bundle's ``cache_dir``) holds the data set's plan, ``plans.json`` (see
:mod:`shared.data.plan`), and one folder per preprocessing chain, named by its key
(:func:`shared.data.cache_key.cache_key`: a hash of the resolved chain and the package version). Such a
folder holds ``preprocessing.json`` (the key and the chain it covers, for people to read) and per case
(file names prefixed ``case_``, so no case id, ``preprocessing`` or one starting with a dot included,
can collide with the folder's own files or with the hidden temporary files of atomic writes):

- ``case_<case>.json``: ``{"case", "split", "image": original path(s), "mask": original path or null,
  "boxes": [[x1, y1, z1, x2, y2, z2], ...] index-space voxel boxes on the preprocessed grid, "labels",
  "instances": mask id per box row or null, "shape": [X, Y, Z], "affine": preprocessed RAS 4x4,
  "original_affine", "original_shape", "cache_key"}``, plus ``"entry_sha256"`` (digest of the datalist
  entry the case was made from, so edited annotations are redone);
- ``case_<case>_image.npy``: (C, X, Y, Z) float32 normalised, C-contiguous;
- ``case_<case>_mask.npy``: (X, Y, Z) int16 instance map, only for cases with a mask.

The arrays are written before the json, each atomically, so a case whose json exists is complete.
Writers hold :func:`cache_lock` (one preprocessing run at a time per cache); readers refuse a case
whose ``cache_key`` is not its folder's (a case copied from another folder).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import torch

from shared.io.atomic import atomic_path, write_json
from shared.io.errors import InputError

PLAN_FILE = "plans.json"
DESCRIPTION_FILE = "preprocessing.json"
CASE_PREFIX = "case_"


class CaseFiles(NamedTuple):
    """The files of one cached case."""

    record: Path
    image: Path
    mask: Path


def case_files(cache_dir: str | os.PathLike, case: str) -> CaseFiles:
    """Paths of a case's json, image and mask in a cache (the mask may not exist)."""
    stem = Path(cache_dir) / f"{CASE_PREFIX}{case}"
    return CaseFiles(Path(f"{stem}.json"), Path(f"{stem}_image.npy"), Path(f"{stem}_mask.npy"))


@dataclass
class CachedCase:
    """One preprocessed case.

    Attributes:
        case: case id.
        split: datalist split.
        image: (C, X, Y, Z) float32, memory-mapped read-only unless read with ``mmap=False``.
        mask: (X, Y, Z) int16 instance map, or None for boxes-only data.
        boxes: (N, 6) float32 xyzxyz voxel boxes on the preprocessed grid.
        labels: (N,) int64 classes.
        instances: (N,) mask id per box row, or None.
        affine: (4, 4) preprocessed RAS affine (``boxes_voxel_to_world(boxes, affine)`` gives world boxes).
        original_affine: (4, 4) affine of the scan as read.
        original_shape: (X, Y, Z) of the scan as read.
        cache_key: key of the preprocessing chain the case was made with.
        record: the whole ``<case>.json``.
        source: the ``<case>.json`` path, for error messages.
    """

    case: str
    split: str
    image: np.ndarray
    mask: np.ndarray | None
    boxes: np.ndarray
    labels: np.ndarray
    instances: np.ndarray | None
    affine: np.ndarray
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    cache_key: str
    record: dict[str, Any] = field(repr=False)
    source: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape[1:])


def read_plan(cache_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The cache's plan, or None when it has none yet."""
    path = Path(cache_dir) / PLAN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(path, f"not a readable plan ({error}); delete it or preprocess with overwrite=True") from error


def read_case(cache_dir: str | os.PathLike, case: str, *, mmap: bool = True) -> CachedCase:
    """Load and check one cached case; arrays are memory-mapped (patch reads touch only what they need).

    Raises:
        InputError: naming the case's json, when it is missing or unreadable, was made with another plan
            than its folder's ``preprocessing.json`` says (when the folder has one), boxes are not (N, 6), labels or
            instance ids do not match the boxes, or an array is unreadable or of the wrong shape.
    """
    files = case_files(cache_dir, case)
    source = files.record
    record = _read_record(source)
    _check_cache_key(cache_dir, source, record)
    boxes, labels, instances = _annotations(source, record)
    shape = tuple(int(size) for size in record["shape"]) if "shape" in record else None
    image = _load_array(source, files.image, shape, leading=1, mmap=mmap)
    mask = _load_array(source, files.mask, image.shape[1:], leading=0, mmap=mmap) if files.mask.exists() else None
    return CachedCase(
        case=record["case"], split=record["split"], image=image, mask=mask, boxes=boxes, labels=labels,
        instances=instances, affine=np.asarray(record["affine"], dtype=np.float64),
        original_affine=np.asarray(record["original_affine"], dtype=np.float64),
        original_shape=tuple(record["original_shape"]), cache_key=record.get("cache_key", ""), record=record,
        source=source)


def read_description(cache_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A keyed cache folder's ``preprocessing.json`` (its key and chain), or None when it has none."""
    path = Path(cache_dir) / DESCRIPTION_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(path, f"unreadable ({error}); delete the folder and preprocess again") from error


def _check_cache_key(cache_dir: str | os.PathLike, source: Path, record: dict[str, Any]) -> None:
    description = read_description(cache_dir)
    if description is not None and record.get("cache_key") != description.get("key"):
        raise InputError(source, f"made with preprocessing {str(record.get('cache_key'))[:16]} but this folder "
                                 f"holds preprocessing {str(description.get('key'))[:16]} ({DESCRIPTION_FILE}); "
                                 "preprocess again with the settings you train with")


def _annotations(source: Path, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    raw_boxes = record.get("boxes") or []
    if not (isinstance(raw_boxes, list) and all(isinstance(b, list) and len(b) == 6 for b in raw_boxes)):
        raise InputError(source, f"'boxes' must be a list of [x1, y1, z1, x2, y2, z2], got {raw_boxes!r}")
    boxes = np.asarray(raw_boxes, dtype=np.float32).reshape(-1, 6)
    labels = np.asarray(record.get("labels") or [], dtype=np.int64).reshape(-1)
    if len(labels) != len(boxes):
        raise InputError(source, f"{len(boxes)} boxes but {len(labels)} labels")
    instances = record.get("instances")
    if instances is not None:
        instances = np.asarray(instances, dtype=np.int64).reshape(-1)
        if len(instances) != len(boxes):
            raise InputError(source, f"{len(boxes)} boxes but {len(instances)} instance ids")
    return boxes, labels, instances


def _load_array(source: Path, path: Path, shape: tuple[int, ...] | None, *, leading: int,
                mmap: bool) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as error:
        raise InputError(source, f"cannot read {path.name} ({error}); preprocess again with overwrite=True") from error
    if array.ndim != 3 + leading or (shape is not None and tuple(array.shape[leading:]) != tuple(shape)):
        raise InputError(source, f"{path.name} has shape {array.shape}, expected spatial shape {list(shape or [])}")
    return array


def list_cases(cache_dir: str | os.PathLike, split: str | None = None) -> list[str]:
    """Sorted ids of the complete cases in a cache, optionally of one split only."""
    cases = []
    # atomic writes leave hidden temporary files, and every case file starts with the prefix
    for path in sorted(Path(cache_dir).glob(f"{CASE_PREFIX}*.json")):
        if split is None or _read_record(path).get("split") == split:
            cases.append(path.name[len(CASE_PREFIX):-len(".json")])
    return cases


def write_case(cache_dir: str | os.PathLike, record: dict[str, Any], image: np.ndarray,
               mask: np.ndarray | None) -> Path:
    """Write one case's arrays then its json, each atomically; returns the json path."""
    files = case_files(cache_dir, record["case"])
    _save_array(files.image, np.ascontiguousarray(image, dtype=np.float32))
    if mask is not None:
        _save_array(files.mask, np.ascontiguousarray(mask, dtype=np.int16))
    else:
        files.mask.unlink(missing_ok=True)  # a stale map from a run when the case had a mask
    return write_json(files.record, record)


def entry_digest(entry: dict[str, Any]) -> str:
    """sha256 of a datalist entry (paths, boxes, labels, instances): a case is redone when it changes."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()


def case_is_current(cache_dir: str | os.PathLike, case: str, key: str, *, split: str,
                    entry: dict[str, Any]) -> bool:
    """Whether a cached case was made by the chain ``key`` from this very datalist entry (then it is skipped)."""
    files = case_files(cache_dir, case)
    if not files.record.exists() or not files.image.exists():
        return False
    try:
        record = json.loads(files.record.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if entry.get("mask") and not files.mask.exists():
        return False
    return (record.get("cache_key") == key and record.get("split") == split
            and record.get("entry_sha256") == entry_digest(entry))


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "no such cached case; run preprocessing first") from None
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(path, f"cached case is unreadable ({error}); preprocess again with overwrite=True") from error


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.save(handle, array)


@contextmanager
def cache_lock(cache_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the cache for one writer: a second preprocessing run into the same folder waits here.

    The lock is an exclusive ``flock`` on the cache folder itself (created if needed), so no lock file
    is left behind and a killed run releases it with its process. Two runs with different settings
    then leave the cache made by one of them, never a mix.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle = os.open(cache_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{cache_dir}: another preprocessing run is writing this cache; waiting for it", file=sys.stderr,
                  flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield cache_dir
    finally:
        os.close(handle)  # closing the descriptor releases the lock


@contextmanager
def rank_zero_first():
    """Under ``torchrun``, rank 0 runs the block (e.g. filling the cache) while the other ranks wait at a
    ``torch.distributed.barrier``; they then run it and find the work done instead of writing the same
    files at the same time. Without an initialised process group this does nothing.
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    distributed = distributed and torch.distributed.get_world_size() > 1
    if distributed and torch.distributed.get_rank() > 0:
        torch.distributed.barrier()
    yield
    if distributed and torch.distributed.get_rank() == 0:
        torch.distributed.barrier()
