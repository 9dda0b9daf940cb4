from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from shared.metrics import ignite as ignite_module
from shared.metrics.detection_metrics import compute_detection_metrics, matching_thresholds
from shared.metrics.ignite import DetectionMetrics
from shared.metrics.matching import match_detections

NAMES = ["a", "b"]


def _batches(case, size):
    batches = []
    for start in range(0, len(case["gt_boxes"]), size):
        images = range(start, min(start + size, len(case["gt_boxes"])))
        predictions = [
            {key: torch.as_tensor(case[f"pred_{key}"][i]) for key in ("boxes", "labels", "scores")} for i in images
        ]
        targets = [{"boxes": case["gt_boxes"][i], "labels": case["gt_labels"][i]} for i in images]
        batches.append((predictions, targets))
    return batches


def _expected(case, repeat=1):
    pick = lambda key: list(case[key]) * repeat  # noqa: E731
    record = match_detections(
        pick("pred_boxes"), pick("pred_labels"), pick("pred_scores"), pick("gt_boxes"), pick("gt_labels"),
        num_classes=2, iou_thresholds=matching_thresholds((0.1, 0.5, 0.75), (0.1, 0.5, 0.05), (0.1,)),
    )
    return compute_detection_metrics(record, NAMES)


def test_engine_accumulates_batches_like_one_evaluation(random_case, rng):
    case = random_case(rng, classes=2, images=7)
    engine = Engine(lambda engine, batch: batch)
    metric = DetectionMetrics(NAMES)
    metric.attach(engine, "detection")
    state = engine.run(_batches(case, 3), max_epochs=1)
    expected = _expected(case)
    assert state.metrics[DetectionMetrics.key_metric] == pytest.approx(expected["AP_IoU_0.10_MaxDet_100"], nan_ok=True)
    for key, value in expected.items():
        assert state.metrics[key] == pytest.approx(value, nan_ok=True), key


def test_reset_and_empty():
    metric = DetectionMetrics(NAMES)
    assert np.isnan(metric.compute()["AP_IoU_0.10_MaxDet_100"])
    box = torch.tensor([[0, 0, 0, 2, 2, 2.0]])
    metric.update(([{"boxes": box, "labels": torch.tensor([0]), "scores": torch.tensor([0.9])}],
                   [{"boxes": box, "labels": torch.tensor([0])}]))
    assert metric.compute()["a/AP_IoU_0.10_MaxDet_100"] == pytest.approx(1.0)
    metric.reset()
    assert np.isnan(metric.compute()["a/AP_IoU_0.10_MaxDet_100"])
    with pytest.raises(ValueError, match="prediction dicts"):
        metric.update(([], [{"boxes": box, "labels": torch.tensor([0])}]))


def test_distributed_compute_gathers_every_rank(random_case, rng, monkeypatch):
    """Two ranks holding the same images must give the metrics of the images twice."""
    case = random_case(rng, classes=2, images=5)
    metric = DetectionMetrics(NAMES)
    for batch in _batches(case, 2):
        metric.update(batch)
    monkeypatch.setattr(ignite_module.idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(ignite_module.idist, "all_gather", lambda value: [value, value])
    gathered = metric.compute()
    expected = _expected(case, repeat=2)
    for key, value in expected.items():
        assert gathered[key] == pytest.approx(value, nan_ok=True), key
