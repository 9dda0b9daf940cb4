"""Datalists: MONAI decathlon-style JSON, the one way data sets are described.

``{"training": [...], "validation": [...], "test": [...], "unlabelled": [...]}``, each entry
``{"image": path or [path per channel], "box": [[cx, cy, cz, w, h, d], ...], "label": [...]}`` with
boxes in world millimetres (``cccwhd``, LPS, see :mod:`shared.boxes.convention`) and classes 0..C-1.
Paths are relative to the datalist's folder (absolute paths are kept). Optional keys: ``"mask"`` (an
instance map, with ``"instances"`` mapping its ids to box rows) and anything else, carried along.
An optional top-level ``"classes"`` names the classes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from shared.io.atomic import write_json
from shared.io.errors import InputError

SPLITS = ("training", "validation", "test", "unlabelled")


def read_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a datalist; image paths come back absolute.

    Raises:
        InputError: naming the file and the entry, for unreadable JSON, a missing ``image``, boxes not
            (N, 6) with positive sizes, labels not matching boxes, or non-integer classes.
    """
    path = Path(path)
    data = read_json_input(path, "datalist")
    if not isinstance(data, dict) or not any(split in data for split in SPLITS):
        raise InputError(path, f"a datalist is a JSON object with at least one of the lists {SPLITS}")
    root = path.parent
    for split in SPLITS:
        entries = data.get(split, [])
        if not isinstance(entries, list):
            raise InputError(path, f"'{split}' must be a list of entries")
        data[split] = [_checked_entry(path, root, split, index, entry) for index, entry in enumerate(entries)]
    return data


def read_json_input(path: str | os.PathLike, what: str) -> Any:
    """The parsed JSON of a file a user named; a missing or unreadable file is an error naming it.

    Args:
        path: the file.
        what: what the file should be, for the message (``"datalist"``, ``"multi-dataset datalist"``).

    Raises:
        InputError: ``<path>: <what> not found`` or ``<path>: not a readable JSON <what> (<why>)``.
    """
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, f"{what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"not a readable JSON {what} ({error})") from error


def read_split(path: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """The entries of one split; an empty or absent split is an error (there is nothing to do)."""
    if split not in SPLITS:
        raise InputError(path, f"unknown split '{split}', expected one of {SPLITS}")
    entries = read_datalist(path)[split]
    if not entries:
        raise InputError(path, f"the '{split}' split is empty")
    return entries


def write_datalist(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write a datalist atomically, with image and mask paths made relative to its folder."""
    root = Path(path).parent.resolve()
    out = {key: value for key, value in data.items() if key not in SPLITS}
    for split in SPLITS:
        if split in data:
            out[split] = [_relative_entry(entry, root) for entry in data[split]]
    return write_json(path, out)


def entry_boxes(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes (N, 6) float64 world cccwhd, labels (N,) int64)`` of a checked entry."""
    return (np.asarray(entry.get("box", []), dtype=np.float64).reshape(-1, 6),
            np.asarray(entry.get("label", []), dtype=np.int64).reshape(-1))


def _checked_entry(path: Path, root: Path, split: str, index: int, entry: Any) -> dict[str, Any]:
    where = f"{split}[{index}]"
    if not isinstance(entry, dict) or "image" not in entry:
        raise InputError(path, f"{where} needs an 'image' field")
    entry = dict(entry)
    image = entry["image"]
    if not (_is_path(image) or (isinstance(image, list) and image and all(_is_path(item) for item in image))):
        raise InputError(path, f"{where}: 'image' must be a file path or a non-empty list of paths (one per "
                               f"channel), got {json.dumps(image)}")
    entry["image"] = _absolute(root, image)
    where = f"{where} ({_first(entry['image'])})"
    if entry.get("mask") is not None and not _is_path(entry["mask"]):
        raise InputError(path, f"{where}: 'mask' must be a file path or null, got {json.dumps(entry['mask'])}")
    if entry.get("mask"):
        entry["mask"] = _absolute(root, entry["mask"])
    boxes, labels = entry.get("box", []), entry.get("label", [])
    try:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6) if len(boxes) else np.zeros((0, 6))
        labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise InputError(path, f"{where}: 'box' must be a list of [cx, cy, cz, w, h, d] ({error})") from None
    if len(boxes) != len(labels):
        raise InputError(path, f"{where}: {len(boxes)} boxes but {len(labels)} labels")
    if not np.isfinite(boxes).all() or (boxes[:, 3:] <= 0).any():
        raise InputError(path, f"{where}: boxes must be finite with positive width, height and depth")
    if len(labels) and (np.any(labels < 0) or np.any(labels != np.round(labels))):
        raise InputError(path, f"{where}: labels must be class indices 0..C-1, got {labels.tolist()}")
    entry["box"], entry["label"] = boxes.tolist(), labels.astype(int).tolist()
    return entry


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _absolute(root: Path, image: Any) -> str | list[str]:
    if isinstance(image, (list, tuple)):
        return [str((root / item).resolve()) for item in image]
    return str((root / image).resolve())


def _relative_entry(entry: dict[str, Any], root: Path) -> dict[str, Any]:
    entry = dict(entry)
    for key in ("image", "mask"):
        if key in entry:
            value = entry[key]
            if isinstance(value, (list, tuple)):
                entry[key] = [_relative(v, root) for v in value]
            else:
                entry[key] = _relative(value, root)
    return entry


def _relative(value: str, root: Path) -> str:
    try:
        return os.path.relpath(Path(value).resolve(), root)
    except ValueError:  # another drive on Windows
        return str(value)


def _first(image: str | list[str]) -> str:
    return image[0] if isinstance(image, list) else image
