"""The multi-dataset datalist of supervised (MultiTalent) pre-training: several segmentation data sets in one JSON.

Format (paths relative to the file's folder; absolute ones are kept)::

    {
      "name": "embedded_multitalent",                      # optional
      "datasets": {
        "lung_ct": {                                        # the data set id: letters, digits, _ and -
          "classes": ["lungs", "vessels", "nodules"],       # labels 1..K of the label maps (0: background)
          "modality": ["CT"],                               # one name per image channel
          "kind": "softmax",                                # optional: "softmax" (CE + Dice) or "regions"
          "regions": [[1, 2, 3], [3]],                      # optional, kind "regions": labels per channel
          "training": [{"image": "lung/img_000.nii.gz", "label": "lung/seg_000.nii.gz"}, ...],
          "validation": [...]                               # optional
        },
        "brain_mri": {"classes": [...], "modality": ["T1c", "FLAIR"],
                      "training": [{"image": ["t1c.nii.gz", "flair.nii.gz"], "label": "seg.nii.gz"}]}
      }
    }

A data set's channel count is the length of its ``modality`` list; every entry's ``image`` is one path
(one channel) or a list of one path per channel. ``label`` is an integer label map on the image's grid.
:func:`read_multi_datalist` checks all of this and reports the first problem in one line naming the
file, the data set and the entry; :func:`tasks_of` gives the network's task specs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.io.atomic import write_json
from shared.io.datalist import read_json_input
from shared.io.errors import InputError

SPLITS = ("training", "validation")
KINDS = ("softmax", "regions")
DATASET_ID = re.compile(r"[A-Za-z0-9_-]+")
DATASET_KEYS = {"classes", "modality", "kind", "regions", "description", *SPLITS}


def read_multi_datalist(path: str | os.PathLike, *, check_files: bool = False) -> dict[str, Any]:
    """Load and check a multi-dataset datalist; paths come back absolute.

    Args:
        path: the JSON file.
        check_files: also check that every image and label file exists.

    Returns:
        The datalist with every data set completed: ``in_channels``, ``kind`` and both splits present.

    Raises:
        InputError: naming the file, the data set and the entry (see the module docstring).
    """
    path = Path(path)
    return check_multi_datalist(read_json_input(path, "multi-dataset datalist"), path, check_files=check_files)


def check_multi_datalist(data: Any, path: str | os.PathLike, *, check_files: bool = False) -> dict[str, Any]:
    """Check a multi-dataset datalist held in memory as if read from ``path`` (what paths are relative to).

    Returns:
        A checked copy, as :func:`read_multi_datalist` returns it.
    """
    path = Path(path)
    datasets = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(datasets, dict) or not datasets:
        raise InputError(path, "a multi-dataset datalist is a JSON object with a non-empty object 'datasets' "
                               "(data set id -> {classes, modality, training, ...})")
    return {**data, "datasets": {name: _checked_dataset(path, name, spec, check_files)
                                 for name, spec in datasets.items()}}


def _checked_dataset(path: Path, name: str, spec: Any, check_files: bool) -> dict[str, Any]:
    where = f"datasets.{name}"
    if not DATASET_ID.fullmatch(str(name)):
        raise InputError(path, f"{where}: a data set id may hold only letters, digits, '_' and '-'")
    if not isinstance(spec, dict):
        raise InputError(path, f"{where}: expected an object with classes, modality and training")
    unknown = sorted(set(spec) - DATASET_KEYS)
    if unknown:
        raise InputError(path, f"{where}: unknown key(s) {unknown}; allowed: {sorted(DATASET_KEYS)}")
    classes, modality = spec.get("classes"), spec.get("modality")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise InputError(path, f"{where}.classes: expected a non-empty list of class names, got {classes!r}")
    if isinstance(modality, str):
        modality = [modality]
    if not isinstance(modality, list) or not modality or not all(isinstance(m, str) and m for m in modality):
        raise InputError(path, f"{where}.modality: expected one name per image channel, got {spec.get('modality')!r}")
    kind = spec.get("kind", "softmax")
    if kind not in KINDS:
        raise InputError(path, f"{where}.kind: expected one of {KINDS}, got {kind!r}")
    regions = spec.get("regions")
    if regions is not None:
        valid = isinstance(regions, list) and regions and all(
            isinstance(r, list) and r and all(isinstance(i, int) and 1 <= i <= len(classes) for i in r)
            for r in regions)
        if kind != "regions" or not valid:
            raise InputError(path, f"{where}.regions: needs kind 'regions' and a list of non-empty label lists "
                                   f"within 1..{len(classes)}, got {regions!r}")
    checked = {**spec, "classes": list(classes), "modality": list(modality), "kind": kind,
               "in_channels": len(modality)}
    for split in SPLITS:
        entries = spec.get(split, [])
        if not isinstance(entries, list) or (split == "training" and not entries):
            raise InputError(path, f"{where}.{split}: expected a {'non-empty ' if split == 'training' else ''}"
                                   "list of {image, label} entries")
        checked[split] = [_checked_entry(path, f"{where}.{split}[{index}]", entry, len(modality), check_files)
                          for index, entry in enumerate(entries)]
    return checked


def _checked_entry(path: Path, where: str, entry: Any, channels: int, check_files: bool) -> dict[str, Any]:
    if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
        raise InputError(path, f"{where}: expected an object with 'image' and 'label'")
    images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
    if len(images) != channels or not all(isinstance(image, str) and image for image in images):
        raise InputError(path, f"{where}.image: expected {channels} path(s), one per modality channel, "
                               f"got {entry['image']!r}")
    if not isinstance(entry["label"], str) or not entry["label"]:
        raise InputError(path, f"{where}.label: expected the path of a label map, got {entry['label']!r}")
    root = path.parent
    resolved = [str(root / image) for image in images]
    label = str(root / entry["label"])
    if check_files:
        for file in [*resolved, label]:
            if not Path(file).is_file():
                raise InputError(path, f"{where}: the file {file} does not exist")
    return {**entry, "image": resolved if channels > 1 else resolved[0], "label": label}


def tasks_of(datalist: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The network's task specs (:class:`shared.networks.multitalent.SegmentationTask`), in datalist order."""
    tasks = []
    for name, spec in datalist["datasets"].items():
        task = {"name": name, "in_channels": int(spec["in_channels"]), "classes": list(spec["classes"]),
                "kind": spec.get("kind", "softmax")}
        if spec.get("regions") is not None:
            task["regions"] = spec["regions"]
        tasks.append(task)
    return tasks


def write_multi_datalist(path: str | os.PathLike, datasets: Mapping[str, Mapping[str, Any]], *,
                         name: str | None = None) -> Path:
    """Write a multi-dataset datalist, paths made relative to its folder where they lie below it.

    Args:
        path: the JSON file to write.
        datasets: data set id → ``{"classes", "modality", "training", ...}`` as in the module docstring.
        name: optional name of the collection.

    Returns:
        The path written (checked first, so an invalid datalist is never written).
    """
    path = Path(path)
    root = path.parent.resolve()

    def relative(file: str) -> str:
        absolute = Path(file).resolve()
        return str(absolute.relative_to(root)) if absolute.is_relative_to(root) else str(file)

    written: dict[str, Any] = {} if name is None else {"name": name}
    written["datasets"] = {}
    for dataset, spec in datasets.items():
        out = {key: value for key, value in spec.items() if key not in (*SPLITS, "in_channels")}
        for split in SPLITS:
            out[split] = [{**entry, "label": relative(entry["label"]),
                           "image": [relative(i) for i in entry["image"]] if isinstance(entry["image"], list)
                           else relative(entry["image"])} for entry in spec.get(split, [])]
        written["datasets"][dataset] = out
    check_multi_datalist(written, path)
    return write_json(path, written)
