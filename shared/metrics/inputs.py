"""Reading evaluation inputs: a decathlon-style datalist (ground truth) and a predictions file.

Both hold world-millimetre ``cccwhd`` boxes; they are returned as xyzxyz (IoU is unchanged by the
scaling and shift of an axis-aligned world<->voxel affine, so there metrics in millimetres equal
metrics in voxels; on oblique scans boxes are compared as the axis-aligned world boxes the files hold). Every
problem raises :class:`EvaluationInputError` naming the file, the image and the field.

Images are matched by the path as written in the datalist, or by the normalised absolute path
(datalist paths resolved against ``data_root``, default the datalist's folder). An ``image`` that is a
list (several channels) is identified by its first element.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.boxes.ops import cccwhd_to_xyzxyz
from shared.metrics.errors import EvaluationInputError

__all__ = ["GroundTruthSet", "PredictionSet", "load_ground_truth", "load_predictions", "read_json"]

_WRAPPER_KEYS = ("test", "validation", "training", "predictions")


@dataclasses.dataclass
class GroundTruthSet:
    """Objects of the evaluated images, in datalist order.

    Attributes:
        image_ids: the ``image`` of each entry as written in the datalist.
        boxes: xyzxyz boxes per image. Shape ``(M_i, 6)``.
        labels: class per box. Shape ``(M_i,)``.
        class_names: one name per class.
        lookup: every accepted spelling of an image -> its index.
        class_names_origin: where ``class_names`` came from, for messages about labels beyond them.
    """

    image_ids: list[str]
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    class_names: list[str]
    lookup: dict[str, int]
    class_names_origin: str = "class_names"


@dataclasses.dataclass
class PredictionSet:
    """Detections aligned with a :class:`GroundTruthSet` (empty for images without an entry).

    Attributes:
        boxes: xyzxyz boxes per image. Shape ``(N_i, 6)``.
        labels: class per box. Shape ``(N_i,)``.
        scores: score per box. Shape ``(N_i,)``.
        images_without_entry: image ids that had no entry in the predictions file.
    """

    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    scores: list[np.ndarray]
    images_without_entry: list[str]


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, raising :class:`EvaluationInputError` with the file name on failure."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise EvaluationInputError(f"{path}: file not found.") from error
    except IsADirectoryError as error:
        raise EvaluationInputError(f"{path}: is a folder, not a JSON file; give the file inside it.") from error
    except UnicodeDecodeError as error:
        raise EvaluationInputError(
            f"{path}: not a JSON text file (binary content at byte {error.start}); give the predictions JSON."
        ) from error
    except json.JSONDecodeError as error:
        raise EvaluationInputError(f"{path}: malformed JSON ({error}).") from error
    except OSError as error:
        raise EvaluationInputError(f"{path}: cannot be read ({error.strerror or error}).") from error


def _image_id(entry: Any, path: str | Path, position: int) -> str:
    if not isinstance(entry, dict) or "image" not in entry:
        raise EvaluationInputError(f"{path}: entry {position} has no 'image' field.")
    image = entry["image"]
    if isinstance(image, list) and image:
        image = image[0]
    if not isinstance(image, str):
        raise EvaluationInputError(f"{path}: entry {position}: field 'image' must be a path, got {image!r}.")
    return image


def _absolute(image: str, root: str | Path) -> str:
    """The image's absolute path with symbolic links resolved (datalists resolve them when read)."""
    return os.path.realpath(image if os.path.isabs(image) else os.path.join(os.path.abspath(root), image))


def _parse_boxes(value: Any, path: str | Path, image: str, field: str = "box") -> np.ndarray:
    where = f"{path}: image {image!r}: field {field!r}"
    try:
        boxes = np.asarray(value if value is not None else [], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise EvaluationInputError(_box_problem(value, where)) from error
    if boxes.size == 0:
        return np.zeros((0, 6))
    if boxes.ndim != 2 or boxes.shape[1] != 6:
        raise EvaluationInputError(f"{where} must be a list of [cx, cy, cz, w, h, d] boxes, got shape {boxes.shape}.")
    if not np.isfinite(boxes).all():
        raise EvaluationInputError(f"{where} contains NaN or infinite values.")
    if (boxes[:, 3:] < 0).any():
        row = int(np.flatnonzero((boxes[:, 3:] < 0).any(axis=1))[0])
        raise EvaluationInputError(f"{where}: box {row} has a negative size {boxes[row, 3:].tolist()}.")
    return cccwhd_to_xyzxyz(boxes)


def _box_problem(value: Any, where: str) -> str:
    """The message for a ``box`` field numpy cannot read: the first box holding a non-number, if any."""
    if isinstance(value, list):
        for row, box in enumerate(value):
            items = box if isinstance(box, list) else [box]
            bad = next((item for item in items if isinstance(item, bool) or not isinstance(item, (int, float))), None)
            if bad is not None:
                hint = " (class labels go in 'label')" if isinstance(bad, str) else ""
                return f"{where}: box {row} holds {bad!r}, not a number{hint}."
    return f"{where} must be a list of [cx, cy, cz, w, h, d] boxes."


# Where class names come from -> what to do when a label lies beyond them.
_REMEDIES = {
    "class_names": "give class_names (--class_names) naming every class.",
    "the datalist's 'classes'": "add the missing classes to the datalist's 'classes' (or give --class_names).",
    "the class names made from the datalist's largest label": "give --class_names naming every class, or a "
    "'classes' list in the datalist.",
}


@dataclasses.dataclass(frozen=True)
class _ClassNames:
    """The class names labels are checked against, and where they came from (for messages)."""

    names: list[str] | None
    origin: str  # one of _REMEDIES

    def unknown_index(self, label: int) -> str:
        count = len(self.names)
        return (f"class {label} is unknown: {self.origin} {self.names} name {count} class"
                f"{'es' if count != 1 else ''} (indices 0..{count - 1}); {_REMEDIES[self.origin]}")

    def unknown_name(self, label: str) -> str:
        if self.names is None:
            return (f"class name {label!r} needs class names: give class_names (--class_names) or a "
                    "'classes' list in the datalist, or use class indices.")
        return f"unknown class name {label!r}; {self.origin} are {self.names}."


def _parse_labels(value: Any, count: int, classes: _ClassNames, path, image: str) -> np.ndarray:
    where = f"{path}: image {image!r}: field 'label'"
    if value is None:
        value = [0] * count
    if not isinstance(value, list) or len(value) != count:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise EvaluationInputError(f"{where} must list one label per box ({count} boxes, got {got}).")
    labels = []
    for item in value:
        if isinstance(item, str):
            if classes.names is None or item not in classes.names:
                raise EvaluationInputError(f"{where}: {classes.unknown_name(item)}")
            labels.append(classes.names.index(item))
        elif (isinstance(item, (int, float)) and not isinstance(item, bool) and float(item).is_integer()
              and item >= 0):
            if classes.names is not None and item >= len(classes.names):
                raise EvaluationInputError(f"{where}: {classes.unknown_index(int(item))}")
            labels.append(int(item))
        else:
            raise EvaluationInputError(f"{where}: label {item!r} is neither a class index nor a class name.")
    return np.asarray(labels, dtype=np.int64)


def _parse_scores(value: Any, count: int, path, image: str) -> np.ndarray:
    where = f"{path}: image {image!r}: field 'label_scores'"
    if not isinstance(value, list) or len(value) != count:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise EvaluationInputError(f"{where} must list one score per box ({count} boxes, got {got}).")
    flat = [item[0] if isinstance(item, list) and len(item) == 1 else item for item in value]
    if not all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in flat):
        raise EvaluationInputError(f"{where} must hold numbers.")
    scores = np.asarray(flat, dtype=np.float64)
    if not all(math.isfinite(score) for score in scores):
        raise EvaluationInputError(f"{where} contains NaN or infinite scores.")
    return scores


def load_ground_truth(
    path: str | Path, split: str = "test", *, data_root: str | Path | None = None,
    class_names: Sequence[str] | None = None,
) -> GroundTruthSet:
    """Read the ground truth of one split of a decathlon-style datalist.

    Args:
        path: the datalist JSON (``{"training": [...], "test": [...]}`` of
            ``{"image", "box" (cccwhd mm), "label"}``; a missing ``box`` means no object).
        split: the key of the evaluated list.
        data_root: folder the datalist's relative image paths are relative to (default: its folder).
        class_names: class names (default: the datalist's ``classes`` list, else ``class_0`` ... up to
            the largest label).

    Returns:
        the :class:`GroundTruthSet`.
    """
    content = read_json(path)
    if not isinstance(content, dict) or not isinstance(content.get(split), list):
        raise EvaluationInputError(f"{path}: no list under the split key {split!r}.")
    if not content[split]:
        others = [f"{key} ({len(value)})" for key, value in content.items() if isinstance(value, list) and value
                  and key != "classes"]
        raise EvaluationInputError(f"{path}: split {split!r} has no images, so there is nothing to evaluate; "
                                   f"choose a split with images (--split): {', '.join(others) or 'there is none'}.")
    classes = _ClassNames(None if class_names is None else [str(name) for name in class_names], "class_names")
    if class_names is None and isinstance(content.get("classes"), list):
        classes = _ClassNames([str(name) for name in content["classes"]], "the datalist's 'classes'")
    root = Path(data_root) if data_root is not None else Path(path).parent
    image_ids, boxes, labels, lookup = [], [], [], {}
    for position, entry in enumerate(content[split]):
        image = _image_id(entry, path, position)
        if image in lookup:
            raise EvaluationInputError(f"{path}: image {image!r} appears twice in split {split!r}.")
        image_boxes = _parse_boxes(entry.get("box"), path, image)
        image_ids.append(image)
        boxes.append(image_boxes)
        labels.append(_parse_labels(entry.get("label"), len(image_boxes), classes, path, image))
        lookup[image] = lookup[_absolute(image, root)] = position
    _warn_zero_size(path, boxes, "ground-truth boxes")
    largest = max((int(label.max()) for label in labels if label.size), default=0)
    if classes.names is None:
        classes = _ClassNames([f"class_{index}" for index in range(largest + 1)],
                              "the class names made from the datalist's largest label")
    return GroundTruthSet(image_ids, boxes, labels, classes.names, lookup, classes.origin)


def _warn_zero_size(path, boxes: list[np.ndarray], what: str) -> None:
    """One warning for the boxes of a file with a zero width, height or depth (IoU 0 with everything)."""
    per_image = [int((np.asarray(b)[:, 3:] <= np.asarray(b)[:, :3]).any(axis=1).sum()) for b in boxes]
    if sum(per_image):
        warnings.warn(f"{path}: {sum(per_image)} {what} of zero size in {sum(map(bool, per_image))} images; "
                      "their IoU with any box is 0, so they can never match.", stacklevel=3)


def _warn_scores_outside_unit_range(path, scores: list[np.ndarray]) -> None:
    """One warning for scores that are not probabilities (only their order matters to the metrics)."""
    outside = [s[(s < 0) | (s > 1)] for s in scores]
    count = sum(o.size for o in outside)
    if count:
        values = np.concatenate(outside)
        warnings.warn(f"{path}: {count} scores in {sum(o.size > 0 for o in outside)} images lie outside [0, 1] "
                      f"({values.min():g} .. {values.max():g}); metrics use only their order, but check that "
                      "label_scores are the model's probabilities.", stacklevel=3)


def _prediction_entries(content: Any, path) -> list:
    if isinstance(content, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(content.get(key), list):
                return content[key]
        raise EvaluationInputError(f"{path}: expected a list of predictions or a dict with one of {_WRAPPER_KEYS}.")
    if not isinstance(content, list):
        raise EvaluationInputError(f"{path}: expected a list of predictions.")
    return content


def load_predictions(
    path: str | Path, ground_truth: GroundTruthSet, *, data_root: str | Path | None = None
) -> PredictionSet:
    """Read a predictions file and align it with the ground truth's images.

    Args:
        path: JSON list of ``{"image", "box" (cccwhd mm), "label", "label_scores"}`` (or a dict wrapping
            such a list under ``test``/``validation``/``training``/``predictions``).
        ground_truth: the images evaluated; a prediction for another image is an error.
        data_root: folder relative prediction paths are relative to (default: the ground truth's root).

    Returns:
        the :class:`PredictionSet`; images without an entry have no detections.
    """
    count = len(ground_truth.image_ids)
    boxes = [np.zeros((0, 6)) for _ in range(count)]
    labels = [np.zeros(0, np.int64) for _ in range(count)]
    scores = [np.zeros(0) for _ in range(count)]
    seen = np.zeros(count, dtype=bool)
    classes = _ClassNames(list(ground_truth.class_names), ground_truth.class_names_origin)
    for position, entry in enumerate(_prediction_entries(read_json(path), path)):
        image = _image_id(entry, path, position)
        index = ground_truth.lookup.get(image)
        if index is None and data_root is not None:
            index = ground_truth.lookup.get(_absolute(image, data_root))
        if index is None:
            index = ground_truth.lookup.get(os.path.realpath(image) if os.path.isabs(image) else "")
        if index is None:
            raise EvaluationInputError(f"{path}: image {image!r} (entry {position}) is not in the evaluated split.")
        if seen[index]:
            raise EvaluationInputError(f"{path}: image {image!r} has more than one prediction entry.")
        seen[index] = True
        boxes[index] = _parse_boxes(entry.get("box"), path, image)
        labels[index] = _parse_labels(entry.get("label"), len(boxes[index]), classes, path, image)
        scores[index] = _parse_scores(entry.get("label_scores"), len(boxes[index]), path, image)
    _warn_zero_size(path, boxes, "predicted boxes")
    _warn_scores_outside_unit_range(path, scores)
    missing = [image for image, found in zip(ground_truth.image_ids, seen) if not found]
    return PredictionSet(boxes, labels, scores, missing)
