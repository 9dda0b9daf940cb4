"""Random small detection cases shared by the metric tests."""

from __future__ import annotations

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
