from __future__ import annotations

import numpy as np
import pytest
from monai.apps.detection.metrics.matching import matching_batch

from shared.boxes.ops import pairwise_iou_3d
from shared.metrics.matching import match_detections

THRESHOLDS = [0.1, 0.3, 0.5, 0.75]


def _match(case, classes, thresholds=THRESHOLDS, max_detections=100):
    return match_detections(
        case["pred_boxes"], case["pred_labels"], case["pred_scores"], case["gt_boxes"], case["gt_labels"],
        case["gt_ignore"], num_classes=classes, iou_thresholds=thresholds, max_detections=max_detections,
    )


@pytest.mark.parametrize("seed", range(4))
def test_identical_to_monai_matching_on_random_cases(random_case, seed):
    """Ties in score and IoU, ignored objects, caps: every per-detection flag equals MONAI's."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        classes = int(rng.integers(1, 4))
        case = random_case(rng, classes=classes, images=int(rng.integers(1, 5)), ignore_rate=0.25)
        cap = int(rng.integers(1, 8))
        record = _match(case, classes, max_detections=cap)
        reference = matching_batch(
            pairwise_iou_3d, THRESHOLDS, case["pred_boxes"], case["pred_labels"], case["pred_scores"],
            case["gt_boxes"], case["gt_labels"], case["gt_ignore"], max_detections=cap,
        )
        for image, per_class in enumerate(reference):
            for label, result in per_class.items():
                chosen = (record.detection_image == image) & (record.detection_class == label)
                np.testing.assert_array_equal(record.detection_score[chosen], result["dtScores"])
                np.testing.assert_array_equal(record.detection_matched[:, chosen], result["dtMatches"].astype(bool))
                np.testing.assert_array_equal(record.detection_ignored[:, chosen], result["dtIgnore"].astype(bool))


def test_duplicate_detections_match_once():
    box = np.array([[0, 0, 0, 4, 4, 4.0]])
    record = match_detections(
        [np.repeat(box, 3, axis=0)], [np.zeros(3, int)], [np.array([0.5, 0.9, 0.7])], [box], [np.zeros(1, int)],
        num_classes=1, iou_thresholds=[0.5],
    )
    np.testing.assert_array_equal(record.detection_score, [0.9, 0.7, 0.5])
    np.testing.assert_array_equal(record.detection_matched, [[True, False, False]])


def test_each_detection_takes_the_best_free_object_and_ties_go_to_the_later_object():
    objects = np.array([[0, 0, 0, 2, 2, 2.0], [0, 0, 0, 2, 2, 2.0], [1, 0, 0, 3, 2, 2.0]])
    detections = np.array([[0, 0, 0, 2, 2, 2.0], [0, 0, 0, 2, 2, 2.0], [0, 0, 0, 2, 2, 2.0]])
    ignore = np.array([False, False, True])
    record = match_detections(
        [detections], [np.zeros(3, int)], [np.array([0.9, 0.8, 0.7])], [objects], [np.zeros(3, int)], [ignore],
        num_classes=1, iou_thresholds=[0.3],
    )
    # Two perfect non-ignored objects are taken first; the third detection (IoU 1/3 with the ignored
    # object) is ignored rather than a false positive.
    np.testing.assert_array_equal(record.detection_matched, [[True, True, True]])
    np.testing.assert_array_equal(record.detection_ignored, [[False, False, True]])


def test_iou_exactly_at_threshold_matches():
    unit = np.array([[0, 0, 0, 2, 2, 2.0]])
    shifted = np.array([[1, 0, 0, 3, 2, 2.0]])  # IoU 1/3
    record = match_detections([shifted], [[0]], [[1.0]], [unit], [[0]], num_classes=1, iou_thresholds=[1 / 3, 0.34])
    np.testing.assert_array_equal(record.detection_matched[:, 0], [True, False])


def test_cap_is_per_image_and_class_and_keeps_highest_scores():
    boxes = np.tile([[0, 0, 0, 1, 1, 1.0]], (4, 1))
    record = match_detections(
        [boxes], [np.array([0, 0, 1, 0])], [np.array([0.1, 0.4, 0.3, 0.2])], [np.zeros((0, 6))], [np.zeros(0)],
        num_classes=2, iou_thresholds=[0.1], max_detections=2,
    )
    np.testing.assert_array_equal(record.detection_class, [0, 0, 1])
    np.testing.assert_array_equal(record.detection_score, [0.4, 0.2, 0.3])


def test_empty_images_and_no_images():
    record = match_detections(
        [np.zeros((0, 6)), np.zeros((0, 6))], [[], []], [[], []], [np.zeros((0, 6)), [[0, 0, 0, 1, 1, 1]]],
        [[], [1]], num_classes=2, iou_thresholds=[0.1],
    )
    assert record.detection_score.size == 0
    np.testing.assert_array_equal(record.ground_truth_count, [[0, 0], [0, 1]])
    nothing = match_detections([], [], [], [], [], num_classes=1)
    assert nothing.num_images == 0 and nothing.detection_matched.shape == (1, 0)


def test_rejects_bad_labels_and_lengths():
    with pytest.raises(ValueError, match="labels"):
        match_detections([[[0, 0, 0, 1, 1, 1]]], [[3]], [[0.5]], [np.zeros((0, 6))], [[]], num_classes=2)
    with pytest.raises(ValueError, match="equal lengths"):
        match_detections([[[0, 0, 0, 1, 1, 1]]], [[0, 0]], [[0.5]], [np.zeros((0, 6))], [[]], num_classes=2)
