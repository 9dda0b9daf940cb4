from __future__ import annotations

import numpy as np
import pytest

from shared.metrics.curves import (
    RECALL_THRESHOLDS,
    curve_statistics,
    froc_points,
    precision_recall_points,
)


def _statistics(scores, true, images, objects_per_image, weights=None, **kwargs):
    scores = np.asarray(scores, float)
    true = np.asarray(true, bool)
    weights = np.ones((1, len(objects_per_image))) if weights is None else weights
    return curve_statistics(scores, true, ~true, np.asarray(images), np.asarray(objects_per_image), weights, **kwargs)


def test_recall_thresholds_are_monais():
    assert RECALL_THRESHOLDS.size == 101 and RECALL_THRESHOLDS[0] == 0.0 and RECALL_THRESHOLDS[-1] == 1.0


def test_hand_computed_ap_recall_and_froc():
    # Image 0: 0.9 hit, 0.8 false; image 1: 0.7 hit, 0.6 false; 3 objects, one never found.
    stats = _statistics([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], [0, 0, 1, 1], [2, 1])
    # Precision 1 up to recall 1/3 (34 thresholds 0.00..0.33), 2/3 up to 2/3 (33 thresholds), then 0.
    assert stats.average_precision[0] == pytest.approx(56 / 101, abs=1e-12)
    assert stats.recall[0] == pytest.approx(2 / 3)
    # FROC corners (0,0) (0,1/3) (0.5,1/3) (0.5,2/3) (1,2/3); at 0.5 the vertical step counts its top.
    np.testing.assert_allclose(stats.froc_sensitivity[0], [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])


def test_tied_scores_form_one_froc_step():
    stats = _statistics([0.9, 0.9], [1, 0], [0, 0], [1])
    # One step from (0, 0) to (1 FP per image, sensitivity 1): interpolated on the diagonal.
    np.testing.assert_allclose(stats.froc_sensitivity[0], [0.125, 0.25, 0.5, 1, 1, 1, 1])
    untied = _statistics([0.9, 0.8], [1, 0], [0, 0], [1])
    np.testing.assert_allclose(untied.froc_sensitivity[0], np.ones(7))


def test_recall_of_exactly_070_does_not_reach_threshold_070_like_monai():
    """MONAI compares a float32 recall with float64 thresholds: float32(0.7) < 0.70, so 70 of 101."""
    stats = _statistics(np.linspace(0.9, 0.3, 7), np.ones(7), np.zeros(7, int), [10])
    assert stats.average_precision[0] == pytest.approx(70 / 101, abs=1e-12)
    assert stats.recall[0] == 0.7  # reported exactly, not as float32


def test_no_detections_and_no_objects():
    empty = _statistics([], [], [], [3])
    assert empty.average_precision[0] == 0.0 and empty.recall[0] == 0.0
    np.testing.assert_array_equal(empty.froc_sensitivity[0], np.zeros(7))
    nothing_to_find = _statistics([0.5], [0], [0], [0])
    assert np.isnan(nothing_to_find.average_precision[0]) and np.isnan(nothing_to_find.froc_sensitivity[0]).all()


def test_ignored_detections_change_nothing():
    base = _statistics([0.9, 0.7, 0.6], [1, 1, 0], [0, 0, 0], [3])
    scores, true = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0], bool)
    counted = np.array([True, False, True, True])  # the 0.8 detection is ignored
    with_ignored = curve_statistics(scores, true & counted, ~true & counted, np.zeros(4, int), np.array([3]),
                                    np.ones((1, 1)))
    assert with_ignored.average_precision[0] == base.average_precision[0]
    np.testing.assert_array_equal(with_ignored.froc_sensitivity, base.froc_sensitivity)


def test_weights_equal_duplicated_images(rng):
    images, per_image = 5, 6
    scores = rng.uniform(size=images * per_image)
    true = rng.uniform(size=scores.size) < 0.4
    owner = np.repeat(np.arange(images), per_image)
    objects = np.bincount(owner[true], minlength=images) + 1
    weights = np.array([[2.0, 0.0, 1.0, 3.0, 1.0]])
    weighted = curve_statistics(*_sorted(scores, true, owner), objects, weights)
    copies = np.repeat(np.arange(images), weights[0].astype(int))
    duplicated = [np.flatnonzero(owner == image) for image in copies]
    new_owner = np.concatenate([np.full(len(rows), new) for new, rows in enumerate(duplicated)])
    rows = np.concatenate(duplicated)
    plain = curve_statistics(*_sorted(scores[rows], true[rows], new_owner), objects[copies], np.ones((1, copies.size)))
    assert weighted.average_precision[0] == pytest.approx(plain.average_precision[0], abs=1e-12)
    assert weighted.recall[0] == pytest.approx(plain.recall[0], abs=1e-12)
    np.testing.assert_allclose(weighted.froc_sensitivity, plain.froc_sensitivity, atol=1e-12)


def _sorted(scores, true, owner):
    order = np.lexsort((owner, -scores))
    return scores[order], true[order], ~true[order], owner[order]


def test_rows_are_independent_weightings():
    stats = _statistics([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], [0, 0, 1, 1], [2, 1],
                        weights=np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 2.0]]))
    only_first = _statistics([0.9, 0.8], [1, 0], [0, 0], [2])
    assert stats.average_precision[1] == pytest.approx(only_first.average_precision[0])
    assert stats.recall[2] == 1.0 and stats.ground_truth_count.tolist() == [3, 2, 2]


def test_plot_points():
    recall, precision = precision_recall_points(np.array([0.2, 0.9]), np.array([False, True]), 2)
    np.testing.assert_allclose(recall, [0, 0.5, 0.5])
    np.testing.assert_allclose(precision, [1, 1, 0.5])
    rate, sensitivity = froc_points(np.array([0.9, 0.9, 0.1]), np.array([True, False, True]), 4, 2)
    np.testing.assert_allclose(rate, [0, 0.5, 0.5])
    np.testing.assert_allclose(sensitivity, [0, 0.25, 0.5])


def _nndetection_froc(scores, true, image_count, object_count):
    """nnDetection's ``FROCMetric`` (and the LUNA16 script) written out: sklearn's ``roc_curve`` corners
    (one per distinct score), then ``fps = fpr * num_fp / num_images``, ``sens = tpr * num_tp / num_gt``."""
    order = np.argsort(-scores, kind="stable")
    ends = np.flatnonzero(np.append(np.diff(scores[order]) != 0, True))
    true_cumulative = np.concatenate([[0], np.cumsum(true[order])[ends]]).astype(float)
    false_cumulative = np.concatenate([[0], np.cumsum(~true[order])[ends]]).astype(float)
    fpr = false_cumulative / false_cumulative[-1]
    tpr = true_cumulative / true_cumulative[-1]
    fps = fpr * false_cumulative[-1] / image_count
    sens = tpr * true_cumulative[-1] / object_count
    return np.interp([0.125, 0.25, 0.5, 1, 2, 4, 8], fps, sens)


def test_froc_rate_is_computed_like_nndetection_and_the_luna16_script():
    """7 images, 25 false positives, the one object found after the 7th: the curve rises vertically at
    1 FP per image, which ``(7 / 25) * 25 / 7`` puts one float step above 1; nnDetection therefore reads
    the bottom of the step at 1 (sensitivity 0), and so do we."""
    scores = np.linspace(1.0, 0.1, 26)
    true = np.zeros(26, bool)
    true[7] = True
    images = np.arange(26) % 7
    objects = np.bincount([0], minlength=7)
    stats = curve_statistics(scores, true, ~true, images, objects, np.ones((1, 7)))
    expected = [0, 0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(_nndetection_froc(scores, true, 7, 1), expected)
    np.testing.assert_array_equal(stats.froc_sensitivity[0], expected)


def test_froc_equals_the_nndetection_formula_bit_for_bit(rng):
    for _ in range(20):
        count, image_count = int(rng.integers(2, 60)), int(rng.integers(1, 9))
        scores = np.round(rng.uniform(size=count), 1)
        true = rng.uniform(size=count) < 0.3
        true[0], true[-1] = True, False
        images = rng.integers(0, image_count, count)
        objects = np.bincount(images[true], minlength=image_count) + rng.integers(0, 2, image_count)
        order = np.lexsort((images, -scores))
        stats = curve_statistics(scores[order], true[order], ~true[order], images[order], objects,
                                 np.ones((1, image_count)))
        expected = _nndetection_froc(scores, true, image_count, objects.sum())
        np.testing.assert_array_equal(stats.froc_sensitivity[0], expected)
