"""LUNA16 ↔ our files: scans + ``annotations.csv`` → datalist, predictions → candidates CSV.

LUNA16 gives each scan as ITK MetaImage (``<seriesuid>.mhd`` + ``.raw``, in ``subset0`` ..
``subset9``) and nodules as ``seriesuid,coordX,coordY,coordZ,diameter_mm``: centres in world mm in
ITK's physical frame (LPS), which is the frame of boxes in our files, so a nodule becomes the cube box
``[x, y, z, d, d, d]`` (``cccwhd``) with class 0 without any conversion. Candidates for the LUNA16
evaluation script are ``seriesuid,coordX,coordY,coordZ,probability``: the centres of our world boxes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from shared.io.atomic import write_text
from shared.io.datalist import write_datalist
from shared.io.errors import InputError
from shared.io.splitting import split_validation

ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "probability")


def import_luna16(annotations_csv: str | os.PathLike, scans_dir: str | os.PathLike,
                  out_datalist: str | os.PathLike, *, validation_fraction: float = 0.2,
                  seed: int = 0) -> dict[str, Any]:
    """Datalist of every ``.mhd`` scan under ``scans_dir`` (searched recursively) with its nodules.

    Scans without nodules are kept with no boxes; annotations of scans not found are left out with a
    warning (converting one subset is normal).
    """
    scans = {}
    for path in sorted(Path(scans_dir).rglob("*.mhd")):
        uid = path.name[: -len(".mhd")]
        if uid in scans:
            raise InputError(path, f"seriesuid {uid} occurs twice (also {scans[uid]})")
        scans[uid] = path
    if not scans:
        raise InputError(scans_dir, "no .mhd scans found (searched subfolders too)")
    nodules = read_annotations(annotations_csv)
    unknown = sorted(set(nodules) - set(scans))
    if unknown:
        warnings.warn(f"{len(unknown)} annotated seriesuids have no scan under {scans_dir}; left out", stacklevel=2)
    entries = [{"image": str(path), "box": [[x, y, z, d, d, d] for x, y, z, d in nodules.get(uid, [])],
                "label": [0] * len(nodules.get(uid, []))} for uid, path in scans.items()]
    training, validation = split_validation(entries, validation_fraction, seed)
    datalist = {"name": "LUNA16", "classes": ["nodule"], "modality": "CT", "training": training,
                "validation": validation}
    write_datalist(out_datalist, datalist)
    return datalist


def read_annotations(path: str | os.PathLike) -> dict[str, list[tuple[float, float, float, float]]]:
    """``{seriesuid: [(x, y, z, diameter_mm), ...]}`` from a LUNA16 annotations CSV."""
    rows = _read_csv(path, ANNOTATION_COLUMNS)
    nodules: dict[str, list] = {}
    for line, row in rows:
        missing = [key for key in ANNOTATION_COLUMNS if not (row.get(key) or "").strip()]
        if missing:  # a short row gives None (csv.DictReader), an empty cell ""
            raise InputError(path, f"line {line}: no {', '.join(missing)}; every row needs "
                                   f"{','.join(ANNOTATION_COLUMNS)}")
        try:
            values = tuple(float(row[key]) for key in ANNOTATION_COLUMNS[1:])
        except ValueError as error:
            raise InputError(path, f"line {line}: {error}") from None
        if values[3] <= 0:
            raise InputError(path, f"line {line}: diameter_mm must be positive, got {values[3]}")
        nodules.setdefault(row["seriesuid"], []).append(values)
    return nodules


def export_luna16_candidates(predictions_json: str | os.PathLike, out_csv: str | os.PathLike) -> Path:
    """Our predictions JSON (a list of ``{"image", "box", "label", "label_scores"}``, or a mapping of
    split names to such lists) → LUNA16 candidates CSV, one row per box, seriesuid = image file stem (the
    SeriesInstanceUID for a DICOM series)."""
    from shared.data.validate import case_id
    from shared.io.images import dicom_series_uid

    try:
        predictions = json.loads(Path(predictions_json).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(predictions_json, f"not a readable predictions JSON ({error})") from error
    if isinstance(predictions, dict):
        predictions = [entry for value in predictions.values() if isinstance(value, list) for entry in value]
    if not isinstance(predictions, list):
        raise InputError(predictions_json, "expected a list of {'image', 'box', 'label_scores'} entries")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CANDIDATE_COLUMNS)
    for index, entry in enumerate(predictions):
        if not isinstance(entry, dict):
            raise InputError(predictions_json, f"entry {index} must be an object with 'image', 'box', 'label_scores'")
        boxes, scores = entry.get("box", []), entry.get("label_scores", [])
        if "image" not in entry or not isinstance(boxes, list) or not isinstance(scores, list) \
                or len(boxes) != len(scores):
            raise InputError(predictions_json, f"entry {index} needs 'image' and one 'label_scores' per 'box'")
        first = entry["image"] if isinstance(entry["image"], str) else entry["image"][0]
        uid = dicom_series_uid(first) or case_id(entry["image"])
        for box, score in zip(boxes, scores):
            writer.writerow(_candidate_row(uid, box, score, predictions_json, f"entry {index} (image {first})"))
    return write_text(out_csv, out.getvalue())


def _candidate_row(uid: str, box: Any, score: Any, path: str | os.PathLike, where: str) -> list[str]:
    """One candidates CSV row, the box centre and the score, each checked to be numbers."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(box, list) or len(box) != 6 or not all(number(v) for v in box):
        raise InputError(path, f"{where}: box {box!r} is not [cx, cy, cz, w, h, d] (six numbers)")
    score = score[0] if isinstance(score, list) and len(score) == 1 else score
    if not number(score):
        raise InputError(path, f"{where}: score {score!r} is not a number")
    return [uid, *(f"{float(v):.4f}" for v in box[:3]), f"{float(score):.6f}"]


def _read_csv(path: str | os.PathLike, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(path, f"missing columns {missing}; expected {','.join(columns)}")
            return [(line, row) for line, row in enumerate(reader, start=2)]
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(path, f"not a readable CSV ({error})") from error
