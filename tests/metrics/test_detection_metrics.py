from __future__ import annotations

import logging

import numpy as np
import pytest
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch

from shared.boxes.ops import pairwise_iou_3d
from shared.metrics.detection_metrics import (
    compute_detection_metrics,
    curve_points,
    iou_range_thresholds,
    matching_thresholds,
    metric_key_requirements,
)
from shared.metrics.matching import match_detections

logging.getLogger().setLevel(logging.ERROR)  # MONAI logs a warning per class without results


def _ours(case, names, iou_list):
    record = match_detections(
        case["pred_boxes"], case["pred_labels"], case["pred_scores"], case["gt_boxes"], case["gt_labels"],
        num_classes=len(names), iou_thresholds=matching_thresholds(iou_list, (0.1, 0.5, 0.05), [0.1]),
    )
    return compute_detection_metrics(record, names, iou_list=iou_list)


def _monai(case, names, iou_list):
    case = {key: [np.asarray(item, dtype=float if "box" in key or "score" in key else int) for item in items]
            for key, items in case.items()}
    case["pred_boxes"] = [boxes.reshape(-1, 6) for boxes in case["pred_boxes"]]
    case["gt_boxes"] = [boxes.reshape(-1, 6) for boxes in case["gt_boxes"]]
    metric = COCOMetric(classes=names, iou_list=iou_list, max_detection=[100], verbose=False)
    results = matching_batch(
        pairwise_iou_3d, metric.iou_thresholds, case["pred_boxes"], case["pred_labels"], case["pred_scores"],
        case["gt_boxes"], case["gt_labels"], max_detections=100,
    )
    values, _ = metric(results)
    renamed = {}
    for key, value in values.items():  # MONAI's "<class>_AP..." is our "<class>/AP..."
        prefix = next((name for name in names if key.startswith(f"{name}_")), None)
        renamed[key if prefix is None else f"{prefix}/{key[len(prefix) + 1:]}"] = value
    return renamed


def test_iou_range_is_built_like_monai():
    np.testing.assert_array_equal(iou_range_thresholds((0.1, 0.5, 0.05)),
                                  COCOMetric(classes=["a"], iou_list=[0.1], verbose=False).iou_thresholds)


@pytest.mark.parametrize("seed", range(3))
def test_identical_to_monai_coco_metric_on_random_cases(random_case, seed):
    """AP and mAP agree to 1e-12; AR differs only by MONAI's float32 rounding of the recall."""
    rng = np.random.default_rng(100 + seed)
    compared = 0
    while compared < 35:
        classes = int(rng.integers(1, 4))
        case = random_case(rng, classes=classes, images=int(rng.integers(1, 6)))
        if np.unique(np.concatenate(case["gt_labels"])).size < classes:
            continue  # MONAI's definition differs for classes without objects (tested below)
        names = ["c0", "c1", "c2"][:classes]
        ours, reference = _ours(case, names, [0.1, 0.5]), _monai(case, names, [0.1, 0.5])
        for key, value in reference.items():
            tolerance = 1e-7 if "AR_" in key else 1e-12
            assert ours[key] == pytest.approx(value, abs=tolerance), key
        compared += 1


def test_recall_is_exact_where_monai_rounds_to_float32():
    box = [[0, 0, 0, 2, 2, 2.0]]
    case = {"pred_boxes": [np.array(box)], "pred_labels": [[0]], "pred_scores": [[0.5]],
            "gt_boxes": [np.array(box * 3)], "gt_labels": [[0, 0, 0]]}
    ours, reference = _ours(case, ["a"], [0.1]), _monai(case, ["a"], [0.1])
    assert ours["AR_IoU_0.10_MaxDet_100"] == 1 / 3
    assert reference["AR_IoU_0.10_MaxDet_100"] == float(np.float32(1 / 3)) != 1 / 3
    assert ours["AP_IoU_0.10_MaxDet_100"] == reference["AP_IoU_0.10_MaxDet_100"]


def test_class_without_ground_truth_is_nan_not_averaged_in():
    """MONAI averages a -1 into AP/mAP for a class without objects; we report NaN and leave it out."""
    box = np.array([[0, 0, 0, 2, 2, 2.0]])
    case = {"pred_boxes": [np.concatenate([box, box + 5])], "pred_labels": [[0, 1]], "pred_scores": [[0.9, 0.8]],
            "gt_boxes": [box], "gt_labels": [[0]]}
    ours, reference = _ours(case, ["a", "b"], [0.1]), _monai(case, ["a", "b"], [0.1])
    assert np.isnan(ours["b/AP_IoU_0.10_MaxDet_100"]) and np.isnan(ours["b/AR_IoU_0.10_MaxDet_100"])
    assert ours["AP_IoU_0.10_MaxDet_100"] == pytest.approx(1.0) == ours["a/AP_IoU_0.10_MaxDet_100"]
    assert reference["AP_IoU_0.10_MaxDet_100"] == pytest.approx((1.0 - 1.0) / 2)
    assert reference["b/AP_IoU_0.10_MaxDet_100"] == -1
    # The pooled FROC counts class b's detection as a false positive: 1 FP in 1 image.
    assert ours["FROC_sensitivity_IoU_0.10_FPPI_1"] == 1.0 and np.isnan(ours["b/FROC_score_IoU_0.10"])


def test_mar_covers_only_its_named_range():
    """MONAI's mAR_IoU_0.10_0.50_0.05 also averages the iou_list thresholds outside the range (0.75)."""
    case = {"pred_boxes": [np.array([[0, 0, 0, 2, 2, 2.0]])], "pred_labels": [[0]], "pred_scores": [[0.9]],
            "gt_boxes": [np.array([[0, 0, 0, 2, 2, 2.4]])], "gt_labels": [[0]]}  # IoU 0.83
    ours, reference = _ours(case, ["a"], [0.1, 0.9]), _monai(case, ["a"], [0.1, 0.9])
    assert ours["mAR_IoU_0.10_0.50_0.05_MaxDet_100"] == 1.0
    assert reference["mAR_IoU_0.10_0.50_0.05_MaxDet_100"] == pytest.approx(9 / 10)


def test_empty_images_images_without_predictions_and_score_ties():
    box = np.array([[0, 0, 0, 2, 2, 2.0]])
    none = np.zeros((0, 6))
    case = {
        "pred_boxes": [none, none, np.concatenate([box, box + 9]), box + 9],
        "pred_labels": [[], [], [0, 0], [0]],
        "pred_scores": [[], [], [0.5, 0.5], [0.5]],
        "gt_boxes": [none, box, box, none],
        "gt_labels": [[], [0], [0], []],
    }
    ours = _ours(case, ["a"], [0.1])
    # Order of the three tied detections: image 2's hit, image 2's miss, image 3's miss (MONAI's order):
    # precision 1 up to recall 1/2 (51 thresholds), then 0: AP = 51/101.
    assert ours["AP_IoU_0.10_MaxDet_100"] == pytest.approx(51 / 101, abs=1e-12)
    assert ours["AR_IoU_0.10_MaxDet_100"] == 0.5
    assert ours["AP_IoU_0.10_MaxDet_100"] == pytest.approx(_monai(case, ["a"], [0.1])["AP_IoU_0.10_MaxDet_100"])
    # FROC: one tie step from (0, 0) to (2 FP / 4 images, 1/2).
    assert ours["FROC_sensitivity_IoU_0.10_FPPI_0.25"] == pytest.approx(0.25)
    assert ours["FROC_sensitivity_IoU_0.10_FPPI_8"] == 0.5


def test_metric_key_requirements_and_curve_points():
    assert metric_key_requirements("x/AP_IoU_0.30_MaxDet_100")["iou_list"] == (0.3,)
    assert metric_key_requirements("mAP_IoU_0.10_0.50_0.05_MaxDet_100")["iou_range"] == (0.1, 0.5, 0.05)
    assert metric_key_requirements("FROC_sensitivity_IoU_0.30_FPPI_0.125")["froc_iou_thresholds"] == (0.3,)
    with pytest.raises(KeyError, match="Unknown metric"):
        metric_key_requirements("accuracy")
    record = match_detections([np.array([[0, 0, 0, 1, 1, 1.0]])], [[0]], [[0.7]], [np.array([[0, 0, 0, 1, 1, 1.0]])],
                              [[0]], num_classes=1, iou_thresholds=[0.1])
    points = curve_points(record, 0, 0.1)
    np.testing.assert_allclose(points["recall"], [0, 1])
    np.testing.assert_allclose(points["sensitivity"], [0, 1])


@pytest.mark.parametrize("extra", [0.15, 0.3, 0.45])
def test_a_threshold_named_twice_does_not_change_the_range(extra):
    """0.3 and the range's 0.30000000000000004 are matched apart; each key reads its own matching."""
    truth = np.array([[0.0, 0, 0, 20, 20, 20]])
    # One detection overlapping the object with IoU exactly ``extra``: matched at ``extra``, not at the
    # range's point one float step above it.
    detection = np.array([[0.0, 0, 0, 20, 20, 20 * extra]])
    assert pairwise_iou_3d(detection, truth)[0, 0] == extra
    metrics = {}
    for froc in ((0.1,), (extra,)):
        record = match_detections([detection], [[0]], [[0.9]], [truth], [[0]], num_classes=1,
                                  iou_thresholds=matching_thresholds((0.1, 0.5, 0.75), (0.1, 0.5, 0.05), froc))
        metrics[froc] = compute_detection_metrics(record, ["a"], froc_iou_thresholds=froc)
    key = "mAP_IoU_0.10_0.50_0.05_MaxDet_100"
    range_points = iou_range_thresholds((0.1, 0.5, 0.05))
    expected = float(np.mean(range_points <= extra))  # AP 1 where the detection matches, else 0
    assert metrics[(0.1,)][key] == metrics[(extra,)][key] == pytest.approx(expected)
    assert metrics[(0.1,)][key.replace("mAP", "mAR")] == metrics[(extra,)][key.replace("mAP", "mAR")]
    assert metrics[(extra,)][f"FROC_score_IoU_{extra:.2f}"] == 1.0  # the FROC reads the exact threshold
