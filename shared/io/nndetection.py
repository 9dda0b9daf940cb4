"""nnDetection's raw data layout ↔ our datalist.

nnDetection keeps a task as ``<Task>/dataset.json`` (``{"task", "name", "dim": 3, "modalities": {"0":
"CT"}, "labels": {"0": "benign", ...}, "test_labels": true, "target_class": null}``) and
``<Task>/raw_splitted/`` with ``imagesTr/<case>_0000.nii.gz`` (one file per channel, ``_0000``,
``_0001``, ...), ``labelsTr/<case>.nii.gz`` (instance map, 0 background) with ``labelsTr/<case>.json``
(``{"instances": {"1": class, "2": class}}``) and the same under ``imagesTs``/``labelsTs``.

Import reads boxes from the instance maps (``[min, max + 1)``, :mod:`shared.boxes.convention`) and keeps
the maps as the entries' ``"mask"`` with ``"instances"``; no image is copied. Export copies NIfTI
channels (other formats are converted), renumbers instances 1..N in box order and, for entries with only
boxes, *paints the boxes* into the instance map (:func:`shared.boxes.rasterize.rasterize_boxes`), so the
exported masks of such data sets are boxes, not shapes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from shared.boxes.convention import boxes_from_instance_mask, boxes_voxel_to_world, boxes_world_to_voxel
from shared.boxes.rasterize import rasterize_boxes
from shared.io.atomic import atomic_path, write_json
from shared.io.datalist import entry_boxes, write_datalist
from shared.io.errors import InputError
from shared.io.images import load_label_map, load_volume, save_nifti
from shared.io.splitting import split_validation

_FOLDERS = {"training": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}


def import_nndetection(raw_dir: str | os.PathLike, out_datalist: str | os.PathLike, *,
                       validation_fraction: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Describe an nnDetection raw data set as a datalist (written to ``out_datalist``, returned).

    Args:
        raw_dir: the task folder (holding ``dataset.json`` and ``raw_splitted/``), or ``raw_splitted``.
        out_datalist: datalist JSON to write; image paths in it are relative to its folder.
        validation_fraction: share of ``imagesTr`` cases held out as the ``validation`` split.
        seed: seed of that draw.
    """
    data_dir, meta = _locate(Path(raw_dir))
    channels = len(meta["modalities"])
    training = _import_folder(data_dir, "training", channels)
    datalist = {"name": meta.get("name", Path(raw_dir).name),
                "classes": [str(meta["labels"][key]) for key in sorted(meta["labels"], key=int)],
                "modality": [str(meta["modalities"][key]) for key in sorted(meta["modalities"], key=int)]}
    datalist["training"], datalist["validation"] = split_validation(training, validation_fraction, seed)
    datalist["test"] = _import_folder(data_dir, "test", channels)
    write_datalist(out_datalist, datalist)
    return datalist


def export_nndetection(datalist: str | os.PathLike, out_raw_dir: str | os.PathLike) -> Path:
    """Write a datalist as an nnDetection task folder (see the module docstring); returns ``out_raw_dir``.

    ``training`` and ``validation`` go to ``imagesTr``, ``test`` to ``imagesTs`` (with ``labelsTs``
    for test entries that carry boxes). Everything is validated before the first file is written.
    """
    # data builds on io, not the reverse, at import time
    from shared.data.plan import class_names
    from shared.data.validate import validate_datalist

    data, cases = validate_datalist(datalist, ("training", "validation", "test"), required=())
    out_raw_dir = Path(out_raw_dir)
    has_test_labels = False
    for case in cases:
        folder = "test" if case.split == "test" else "training"
        labelled = folder == "training" or "box" in case.entry or "mask" in case.entry
        has_test_labels |= folder == "test" and labelled
        _export_case(case, out_raw_dir / "raw_splitted", *_FOLDERS[folder], labelled=labelled)
    modality = data.get("modality", "CT")
    channels = len(cases[0].entry["image"]) if cases and isinstance(cases[0].entry["image"], list) else 1
    modalities = [modality] * channels if isinstance(modality, str) else list(modality)
    classes = class_names(data)
    write_json(out_raw_dir / "dataset.json", {
        "task": out_raw_dir.name, "name": data.get("name", out_raw_dir.name), "dim": 3, "target_class": None,
        "test_labels": has_test_labels, "modalities": {str(i): m for i, m in enumerate(modalities)},
        "labels": {str(i): name for i, name in enumerate(classes)}})
    return out_raw_dir


def _locate(raw_dir: Path) -> tuple[Path, dict[str, Any]]:
    data_dir = raw_dir / "raw_splitted" if (raw_dir / "raw_splitted").is_dir() else raw_dir
    if not (data_dir / "imagesTr").is_dir():
        raise InputError(raw_dir, "not an nnDetection raw data set: no imagesTr/ here or in raw_splitted/")
    for candidate in (raw_dir / "dataset.json", data_dir.parent / "dataset.json"):
        if candidate.exists():
            try:
                meta = json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise InputError(candidate, f"unreadable dataset.json ({error})") from error
            if not isinstance(meta.get("modalities"), dict) or not isinstance(meta.get("labels"), dict):
                raise InputError(candidate, "dataset.json needs 'modalities' and 'labels' mappings")
            return data_dir, meta
    raise InputError(raw_dir, "no dataset.json found next to raw_splitted/")


def _import_folder(data_dir: Path, split: str, channels: int) -> list[dict[str, Any]]:
    images, labels = (data_dir / name for name in _FOLDERS[split])
    entries = []
    for first in sorted(images.glob("*_0000.nii.gz")) if images.is_dir() else []:
        case = first.name[: -len("_0000.nii.gz")]
        paths = [images / f"{case}_{k:04d}.nii.gz" for k in range(channels)]
        for path in paths:
            if not path.exists():
                raise InputError(path, f"missing channel file: dataset.json lists {channels} modalities")
        entry = {"image": [str(p) for p in paths] if channels > 1 else str(paths[0])}
        if (labels / f"{case}.nii.gz").exists():
            entry.update(_import_labels(labels / f"{case}.nii.gz", labels / f"{case}.json"))
        elif split == "training":
            raise InputError(labels / f"{case}.nii.gz", "training case without its instance map")
        entries.append(entry)
    return entries


def _import_labels(mask_path: Path, json_path: Path) -> dict[str, Any]:
    try:
        classes = {int(k): int(v) for k, v in json.loads(json_path.read_text())["instances"].items()}
    except FileNotFoundError:
        raise InputError(json_path, "instance map without its json of instance classes") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(json_path, f"expected {{\"instances\": {{\"1\": class, ...}}}} ({error})") from error
    affine = load_volume(mask_path).affine
    boxes, ids = boxes_from_instance_mask(load_label_map(mask_path))
    missing = [int(i) for i in ids if int(i) not in classes]
    if missing:
        raise InputError(json_path, f"instance ids {missing} of {mask_path.name} have no class")
    return {"mask": str(mask_path), "instances": ids.tolist(), "box": boxes_voxel_to_world(boxes, affine).tolist(),
            "label": [classes[int(i)] for i in ids]}


def _export_case(case, data_dir: Path, images: str, labels: str, *, labelled: bool) -> None:
    from shared.data.validate import channel_paths

    for channel, path in enumerate(channel_paths(case.entry)):
        target = data_dir / images / f"{case.case}_{channel:04d}.nii.gz"
        if str(path).lower().endswith(".nii.gz"):
            with atomic_path(target) as temporary:
                shutil.copyfile(path, temporary)
        else:
            volume = load_volume(path)
            save_nifti(target, volume.array[0], volume.affine)
    if not labelled:
        return
    boxes, classes = entry_boxes(case.entry)
    if case.entry.get("mask"):
        source = load_label_map(case.entry["mask"])
        mask = np.zeros(source.shape, dtype=np.int16)
        for row, instance in enumerate(case.instances):
            mask[source == instance] = row + 1
    else:
        mask = rasterize_boxes(boxes_world_to_voxel(boxes, case.affine), case.shape)
    save_nifti(data_dir / labels / f"{case.case}.nii.gz", mask, case.affine)
    write_json(data_dir / labels / f"{case.case}.json",
               {"instances": {str(row + 1): int(label) for row, label in enumerate(classes)}})
