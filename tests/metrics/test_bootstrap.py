from __future__ import annotations

import numpy as np
import pytest

from shared.metrics.bootstrap import (
    bootstrap_metric_draws,
    bootstrap_ranking,
    bootstrap_weights,
    confidence_intervals,
)
from shared.metrics.detection_metrics import compute_detection_metrics, matching_thresholds
from shared.metrics.matching import match_detections

ARGUMENTS = {"iou_list": (0.1, 0.5), "iou_range": (0.1, 0.5, 0.05), "froc_iou_thresholds": (0.1,)}


def _match(case, images=None):
    images = range(len(case["gt_boxes"])) if images is None else images
    pick = lambda key: [case[key][i] for i in images]  # noqa: E731
    return match_detections(
        pick("pred_boxes"), pick("pred_labels"), pick("pred_scores"), pick("gt_boxes"), pick("gt_labels"),
        num_classes=2, iou_thresholds=matching_thresholds((0.1, 0.5), (0.1, 0.5, 0.05), (0.1,)),
    )


def test_weights_are_seeded_counts():
    weights = bootstrap_weights(7, 50, seed=3)
    assert weights.shape == (50, 7) and (weights.sum(axis=1) == 7).all()
    np.testing.assert_array_equal(weights, bootstrap_weights(7, 50, seed=3))
    assert not np.array_equal(weights, bootstrap_weights(7, 50, seed=4))


def test_confidence_intervals_are_percentiles():
    intervals = confidence_intervals({"x": np.arange(101.0), "nan": np.full(3, np.nan)})
    assert intervals["x"] == pytest.approx([2.5, 97.5])
    assert np.isnan(intervals["nan"]).all()


def test_a_draw_equals_evaluating_the_resampled_images(random_case, rng):
    case = random_case(rng, classes=2, images=8)
    case["pred_scores"] = [rng.uniform(size=len(s)) for s in case["pred_scores"]]  # no ties across copies
    draws = bootstrap_metric_draws(_match(case), ["a", "b"], draws=3, seed=1, **ARGUMENTS)
    weights = bootstrap_weights(8, 3, seed=1)
    for draw in range(3):
        resampled = np.repeat(np.arange(8), weights[draw].astype(int))
        expected = compute_detection_metrics(_match(case, resampled), ["a", "b"], **ARGUMENTS)
        for key, value in expected.items():
            np.testing.assert_allclose(draws[key][draw], value, atol=1e-12, err_msg=key)


def _model(case, rng, quality):
    """Detections at the objects with probability ``quality``, plus noise boxes."""
    found = dict(case)
    found["pred_boxes"], found["pred_labels"], found["pred_scores"] = [], [], []
    for boxes, labels in zip(case["gt_boxes"], case["gt_labels"]):
        keep = rng.uniform(size=len(boxes)) < quality
        noise = np.array([[50, 50, 50, 52, 52, 52.0]])
        found["pred_boxes"].append(np.concatenate([boxes[keep], noise]))
        found["pred_labels"].append(np.concatenate([labels[keep], [0]]))
        found["pred_scores"].append(np.concatenate([rng.uniform(0.5, 1, keep.sum()), [0.9]]))
    return found


def test_ranking_of_clearly_different_and_identical_models(random_case, rng):
    case = random_case(rng, classes=2, images=30)
    perfect, poor = _match(_model(case, rng, 1.0)), _match(_model(case, rng, 0.2))
    ranking = bootstrap_ranking([poor, perfect], ["a", "b"], draws=40, seed=0)
    np.testing.assert_array_equal(ranking.mean_rank, [2.0, 1.0])
    np.testing.assert_array_equal(ranking.rank_histogram, [[0, 40], [40, 0]])
    assert ranking.point_estimate[1] > ranking.point_estimate[0]
    tied = bootstrap_ranking([perfect, perfect], ["a", "b"], draws=10, metric="FROC_score_IoU_0.10")
    np.testing.assert_array_equal(tied.mean_rank, [1.0, 1.0])


def test_ranking_refuses_different_image_counts(random_case, rng):
    case = random_case(rng, classes=2, images=4)
    with pytest.raises(ValueError, match="same images"):
        bootstrap_ranking([_match(case), _match(case, [0, 1])], ["a", "b"], draws=2)
