"""What a detector bundle's training needs before the first step, in one call from its config:
check and preprocess the data, fit the anchors, check the network fits the data, and record all of it
in ``model_plan.json`` so inference rebuilds exactly the same model and preprocessing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shared.data.cache import list_cases, rank_zero_first, read_case, read_plan
from shared.data.preprocess import preprocess
from shared.detectors.anchor_fitting import fit_anchor_sizes
from shared.io.atomic import write_json
from shared.io.errors import InputError

MODEL_PLAN = "model_plan.json"


@dataclass
class DetectionData:
    """The preprocessed data and the model settings derived from it.

    Attributes:
        plan: the cache's preprocessing plan (spacing, intensity statistics, classes).
        train_cases, validation_cases: case ids in the cache.
        class_names: one name per class.
        anchor_sizes: per-axis anchor sizes at the first detection level, fitted to the training boxes.
        patch_size: training and inference tile size.
        detection_strides: the network's detection strides.
    """

    plan: dict[str, Any]
    train_cases: list[str]
    validation_cases: list[str]
    class_names: list[str]
    anchor_sizes: list[list[float]]
    patch_size: list[int]
    detection_strides: list[int]


def prepare_detection_data(
    datalist: str | os.PathLike,
    cache_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    spacing: str | Sequence[float] = "fixed",
    in_channels: int,
    num_classes: int,
    patch_size: Sequence[int],
    detection_strides: Sequence[int],
    network_stride: int | None = None,
    num_workers: int = 0,
) -> DetectionData:
    """Preprocess the training and validation splits (once; cached), fit anchors, write the model plan.

    Raises:
        InputError: naming the datalist, when its channel or class count differs from the network's,
            a split is empty, or the patch size is not a multiple of the network's total stride (the
            encoder's coarsest stride ``network_stride`` when given, which may exceed the coarsest
            detection stride).
    """
    coarsest = max(int(stride) for stride in [*detection_strides, network_stride or 1])
    if any(int(size) % coarsest for size in patch_size):
        raise InputError(datalist, f"patch_size {list(patch_size)} is not divisible by the network's total "
                                   f"stride {coarsest}: choose multiples of {coarsest}")
    with rank_zero_first():
        preprocess(datalist, cache_dir, splits=("training", "validation"), spacing=spacing, num_workers=num_workers)
    plan = read_plan(cache_dir)
    if len(plan["channels"]) != in_channels:
        raise InputError(datalist, f"the scans have {len(plan['channels'])} channel(s) but the network expects "
                                   f"{in_channels}: set in_channels={len(plan['channels'])}")
    if plan["num_classes"] != num_classes:
        raise InputError(datalist, f"the data set has {plan['num_classes']} classes {plan['classes']} but the "
                                   f"network predicts {num_classes}: set num_classes={plan['num_classes']}")
    train_cases, validation_cases = list_cases(cache_dir, "training"), list_cases(cache_dir, "validation")
    if not validation_cases:
        raise InputError(datalist, "the 'validation' split is empty: validation picks the best model")
    data = DetectionData(
        plan=plan, train_cases=train_cases, validation_cases=validation_cases, class_names=list(plan["classes"]),
        anchor_sizes=fit_anchor_sizes(_training_boxes(cache_dir, train_cases), detection_strides),
        patch_size=[int(size) for size in patch_size], detection_strides=[int(s) for s in detection_strides],
    )
    write_json(Path(output_dir) / MODEL_PLAN, {key: value for key, value in asdict(data).items()
                                               if key not in ("train_cases", "validation_cases")})
    return data


def read_model_plan(path: str | os.PathLike) -> dict[str, Any]:
    """The model plan written at training: a ``model_plan.json`` or the folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_PLAN
    if not path.is_file():
        raise InputError(path, "no model plan: train the bundle first (it writes model_plan.json next to "
                               "the weights), or point model_dir at a trained model")
    return json.loads(path.read_text())


def _training_boxes(cache_dir: str | os.PathLike, cases: Sequence[str]) -> np.ndarray:
    boxes = [read_case(cache_dir, case).boxes for case in cases]
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 6))
    if not len(boxes):
        raise InputError(cache_dir, "the training split has no boxes: anchors cannot be fitted")
    return boxes
