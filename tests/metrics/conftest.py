"""Random small detection cases shared by the metric tests."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _boxes(count: int, rng: np.random.Generator) -> np.ndarray:
    corner = rng.uniform(0, 20, (count, 3))
    return np.concatenate([corner, corner + rng.uniform(1, 6, (count, 3))], axis=1)


def make_random_case(rng: np.random.Generator, *, classes: int, images: int, ignore_rate: float = 0.0) -> dict:
    """Per-image lists of xyzxyz boxes; some detections jitter objects, scores are coarse (ties)."""
    case = {key: [] for key in ("pred_boxes", "pred_labels", "pred_scores", "gt_boxes", "gt_labels", "gt_ignore")}
    for _ in range(images):
        objects, detections = int(rng.integers(0, 6)), int(rng.integers(0, 12))
        truth, found = _boxes(objects, rng), _boxes(detections, rng)
        if objects and detections:
            near = int(rng.integers(0, detections + 1))
            found[:near] = truth[rng.integers(0, objects, near)] + rng.normal(0, 0.5, (near, 6)) * rng.integers(0, 2)
            found[:, 3:] = np.maximum(found[:, 3:], found[:, :3] + 0.1)
        case["pred_boxes"].append(found)
        case["pred_labels"].append(rng.integers(0, classes, detections))
        case["pred_scores"].append(np.round(rng.uniform(0, 1, detections), 1))
        case["gt_boxes"].append(truth)
        case["gt_labels"].append(rng.integers(0, classes, objects))
        case["gt_ignore"].append(rng.uniform(size=objects) < ignore_rate)
    return case


@pytest.fixture
def random_case():
    return make_random_case


def write_evaluation_files(tmp_path, rng, *, scramble=0.0, name="predictions.json"):
    """A 12-image datalist (image 0 without a prediction entry) and predictions with a noise box per image."""
    datalist, predictions = {"test": [], "training": []}, []
    for index in range(12):
        count = int(rng.integers(0, 4))
        boxes = np.concatenate([rng.uniform(0, 100, (count, 3)), rng.uniform(4, 10, (count, 3))], axis=1)
        labels = rng.integers(0, 2, count)
        datalist["test"].append({"image": f"scans/{index}.nii.gz", "box": boxes.tolist(), "label": labels.tolist()})
        if index == 0:
            continue  # an image without a prediction entry
        found = boxes + rng.normal(0, scramble, boxes.shape) * [1, 1, 1, 0, 0, 0]
        noise = np.array([[50, 50, 50, 5, 5, 5.0]])
        predictions.append({"image": f"scans/{index}.nii.gz", "box": np.concatenate([found, noise]).tolist(),
                            "label": labels.tolist() + [0], "label_scores": rng.uniform(0.2, 1, count + 1).tolist()})
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    (tmp_path / name).write_text(json.dumps(predictions))
    return tmp_path / name, tmp_path / "datalist.json"


@pytest.fixture
def evaluation_files():
    return write_evaluation_files
