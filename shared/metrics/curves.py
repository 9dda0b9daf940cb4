"""Precision/recall and FROC statistics of one class (or pooled classes) at one IoU threshold.

Every function takes *image weights*: how often each image counts. The plain evaluation uses weight 1
for every image; a bootstrap draw uses how often each image was drawn. Rows of the weight matrix are
evaluated together, so 1,000 draws cost a few vectorised passes over the detections.

Conventions (those of ``monai.apps.detection.metrics.coco`` / nnDetection / pycocotools):
- AP is the mean over the 101 recall thresholds 0, 0.01, ..., 1 of the interpolated precision (the
  highest precision at any recall at least the threshold; 0 where the recall is never reached). The
  recall compared with the thresholds is computed in float32 exactly as MONAI does, so that AP agrees
  with MONAI bit for bit (a recall of exactly 0.7 is then *not* counted as reaching 0.70).
- Recall (AR) is reported exactly (float64), not rounded to float32 as MONAI does.
- FROC: one curve point per distinct score (tied scores form one step, as ``sklearn.roc_curve``),
  starting at (0, 0); sensitivity at a false-positives-per-image value by linear interpolation
  (``numpy.interp``), as nnDetection's ``FROCMetric``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["RECALL_THRESHOLDS", "FROC_FALSE_POSITIVES_PER_IMAGE", "CurveStatistics", "curve_statistics"]

# Built exactly like MONAI's COCOMetric.recall_thresholds so that comparisons agree bit for bit.
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
FROC_FALSE_POSITIVES_PER_IMAGE = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

# Elements (draws x detections) handled per vectorised pass.
_CHUNK_ELEMENTS = 4_000_000


@dataclasses.dataclass(frozen=True)
class CurveStatistics:
    """Statistics per row of image weights (NaN where that row has no ground truth).

    Attributes:
        average_precision: COCO 101-point AP. Shape ``(B,)``.
        recall: recall with all detections. Shape ``(B,)``.
        ground_truth_count: weighted number of objects. Shape ``(B,)``.
        froc_sensitivity: sensitivity at each requested false-positives-per-image value, or ``None``
            when not requested. Shape ``(B, F)``.
    """

    average_precision: np.ndarray
    recall: np.ndarray
    ground_truth_count: np.ndarray
    froc_sensitivity: np.ndarray | None


def _interpolated_precision(true_positives: np.ndarray, false_positives: np.ndarray, ground_truth: np.ndarray):
    """COCO 101-point AP per row from cumulative (weighted) counts. Shapes ``(B, n)``, ``(B,)`` -> ``(B,)``."""
    rows, count = true_positives.shape
    precision = true_positives / (true_positives + false_positives + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    safe_total = np.where(ground_truth > 0, ground_truth, 1).astype(np.float32)
    recall = true_positives.astype(np.float32) / safe_total[:, None]
    precision_at = np.zeros((rows, RECALL_THRESHOLDS.size))
    for row in range(rows):
        index = np.searchsorted(recall[row], RECALL_THRESHOLDS, side="left")
        reached = index < count
        precision_at[row, reached] = envelope[row, index[reached]]
    return np.where(ground_truth > 0, precision_at.mean(axis=1), np.nan)


def _froc_sensitivity(
    true_positives: np.ndarray,
    false_positives: np.ndarray,
    step_ends: np.ndarray,
    ground_truth: np.ndarray,
    image_count: np.ndarray,
    false_positives_per_image: np.ndarray,
) -> np.ndarray:
    """Interpolated FROC sensitivities per row. Returns shape ``(B, F)``."""
    rows = true_positives.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = false_positives[:, step_ends] / image_count[:, None]
        sensitivity = true_positives[:, step_ends] / ground_truth[:, None]
    result = np.full((rows, false_positives_per_image.size), np.nan)
    for row in range(rows):
        if ground_truth[row] > 0:
            x_points = np.concatenate([[0.0], rate[row]])
            y_points = np.concatenate([[0.0], sensitivity[row]])
            result[row] = np.interp(false_positives_per_image, x_points, y_points)
    return result


def curve_statistics(
    scores: np.ndarray,
    true_positive: np.ndarray,
    false_positive: np.ndarray,
    detection_image: np.ndarray,
    ground_truth_per_image: np.ndarray,
    image_weights: np.ndarray,
    *,
    false_positives_per_image: tuple[float, ...] | None = FROC_FALSE_POSITIVES_PER_IMAGE,
) -> CurveStatistics:
    """AP, recall and FROC of a set of detections under several image weightings.

    Args:
        scores: detection scores sorted descending (ties in the order MONAI uses). Shape ``(n,)``.
        true_positive: whether each detection is a true positive. Shape ``(n,)``.
        false_positive: whether each detection is a false positive (a detection that is neither is
            ignored). Shape ``(n,)``.
        detection_image: image index of each detection. Shape ``(n,)``.
        ground_truth_per_image: non-ignored objects per image. Shape ``(I,)``.
        image_weights: how often each image counts, one row per evaluation. Shape ``(B, I)``.
        false_positives_per_image: FROC operating points; ``None`` skips FROC.

    Returns:
        the :class:`CurveStatistics` of each row.
    """
    weights = np.atleast_2d(np.asarray(image_weights, dtype=np.float64))
    ground_truth = weights @ np.asarray(ground_truth_per_image, dtype=np.float64)
    image_count = weights.sum(axis=1)
    count = scores.size
    step_ends = np.flatnonzero(np.append(np.diff(scores) != 0, True)) if count else np.zeros(0, dtype=np.int64)
    operating_points = None if false_positives_per_image is None else np.asarray(false_positives_per_image, float)
    chunk = max(1, _CHUNK_ELEMENTS // max(count, 1))
    precision_parts, recall_parts, froc_parts = [], [], []
    for start in range(0, weights.shape[0], chunk):
        rows = slice(start, start + chunk)
        detection_weight = weights[rows][:, detection_image]
        cumulative_true = np.cumsum(np.where(true_positive, detection_weight, 0.0), axis=1)
        cumulative_false = np.cumsum(np.where(false_positive, detection_weight, 0.0), axis=1)
        precision_parts.append(_interpolated_precision(cumulative_true, cumulative_false, ground_truth[rows]))
        found = cumulative_true[:, -1] if count else np.zeros(cumulative_true.shape[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            recall_parts.append(np.where(ground_truth[rows] > 0, found / ground_truth[rows], np.nan))
        if operating_points is not None:
            froc_parts.append(
                _froc_sensitivity(
                    cumulative_true, cumulative_false, step_ends, ground_truth[rows], image_count[rows],
                    operating_points,
                )
            )
    return CurveStatistics(
        average_precision=np.concatenate(precision_parts),
        recall=np.concatenate(recall_parts),
        ground_truth_count=ground_truth,
        froc_sensitivity=None if operating_points is None else np.concatenate(froc_parts),
    )
