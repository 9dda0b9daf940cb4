from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shared.metrics.report import detection_report, format_value, json_ready


def test_json_ready_makes_strict_json_with_sorted_keys():
    content = json_ready({"b": float("nan"), "a": 1.0, "c": np.float64(0.5), "d": np.array([1, 2]),
                          "e": {"z": np.int64(3), "y": (np.float32(0.25), math.nan)}})
    assert json.dumps(content, allow_nan=False) == (
        '{"a": 1.0, "b": null, "c": 0.5, "d": [1, 2], "e": {"y": [0.25, null], "z": 3}}')


def test_format_and_report_mentions_missing_entries_and_no_ground_truth():
    assert format_value(0.12345) == "12.35" and format_value(math.nan) == "no ground truth"
    assert format_value(0.5, [0.4, 0.6]) == "50.00 [40.00, 60.00]"
    metrics = {"AP_IoU_0.10_MaxDet_100": 0.5, "a/AP_IoU_0.10_MaxDet_100": 0.5, "b/AP_IoU_0.10_MaxDet_100": math.nan}
    counts = {"images": 3, "images_without_predictions": 2, "images_without_prediction_entry": 2, "predictions": 4,
              "ground_truth": 1, "ground_truth_per_class": [1, 0]}
    text = detection_report(metrics, {}, ["a", "b"], counts, iou_list=[0.1], iou_range_name="IoU_0.10_0.50_0.05",
                            froc_iou=0.1, max_detections=100)
    assert "no prediction entry (counted as no detections): 2" in text
    assert "images without any prediction: 2" in text
    assert "| b | 0 | no ground truth" in text
