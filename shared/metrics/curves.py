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
  (``numpy.interp``), as nnDetection's ``FROCMetric``. The corners are computed in their floating-point
  order, not as exact ratios (see :func:`scaled_fraction`): where the curve rises vertically at exactly
  a reported rate, that puts the step one float step to the right, so the reading there is the bottom of
  the step, as in nnDetection and the official LUNA16 script.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import sparse

__all__ = [
    "RECALL_THRESHOLDS",
    "FROC_FALSE_POSITIVES_PER_IMAGE",
    "CurveStatistics",
    "curve_statistics",
    "froc_points",
    "precision_recall_points",
    "scaled_fraction",
]

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


def _count_matrix(rows: np.ndarray, images: np.ndarray, row_count: int, image_count: int) -> sparse.csr_matrix:
    """Sparse ``(row_count, I)`` matrix counting, per row, the entries of each image.

    ``rows`` must be non-decreasing (entries come in score order), so the CSR arrays are built directly;
    repeated (row, image) entries are summed by the matrix product, and no index sorting is needed.
    """
    pointers = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=row_count))])
    return sparse.csr_matrix((np.ones(rows.size), images, pointers), shape=(row_count, image_count))


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where each detection's count goes, computed once for all weightings.

    Only true positives change precision upwards and only tied-score steps with a true positive bend the
    FROC curve, so both are evaluated at a few rows instead of every detection:

    - ``precision_*``: row ``k`` is the ``k``-th true positive; the false positives between the
      ``(k-1)``-th and ``k``-th go to row ``k``. Cumulative sums give the counts at each true positive.
    - ``froc_*``: two rows per score step holding a true positive: the false positives since the
      previous such step, then the step itself. Cumulative sums give the curve's corners.
    """

    true_images: np.ndarray
    precision_false: sparse.csr_matrix
    froc_true: sparse.csr_matrix | None
    froc_false: sparse.csr_matrix | None


def _layout(scores: np.ndarray, true_positive: np.ndarray, false_positive: np.ndarray,
            detection_image: np.ndarray, image_count: int, with_froc: bool) -> _Layout:
    true_positions = np.flatnonzero(true_positive)
    false_positions = np.flatnonzero(false_positive)
    true_before = np.cumsum(true_positive) - true_positive  # true positives strictly before each position
    in_range = true_before[false_positions] < true_positions.size
    precision_false = _count_matrix(
        true_before[false_positions][in_range], detection_image[false_positions][in_range],
        true_positions.size, image_count,
    )
    if not with_froc:
        return _Layout(detection_image[true_positions], precision_false, None, None)
    step = np.concatenate([[0], np.cumsum(np.diff(scores) != 0)]) if scores.size else np.zeros(0, np.int64)
    step_count = int(step[-1]) + 1 if scores.size else 0
    key_step = np.zeros(step_count, dtype=bool)
    key_step[step[true_positions]] = True
    key_index = np.cumsum(key_step) - key_step  # key steps strictly before each step
    # A false positive inside a key step goes to that step's row, otherwise to the gap before the next.
    false_step = step[false_positions]
    false_row = np.where(key_step[false_step], 2 * key_index[false_step] + 1, 2 * key_index[false_step])
    key_count = int(key_step.sum())
    kept = false_row < 2 * key_count
    froc_false = _count_matrix(false_row[kept], detection_image[false_positions][kept], 2 * key_count, image_count)
    froc_true = _count_matrix(
        2 * key_index[step[true_positions]] + 1, detection_image[true_positions], 2 * key_count, image_count
    )
    return _Layout(detection_image[true_positions], precision_false, froc_true, froc_false)


def _interpolated_precision(true_positives: np.ndarray, false_positives: np.ndarray, ground_truth: np.ndarray):
    """COCO 101-point AP per column from cumulative counts at each true positive.

    Shapes ``(n, B)``, ``(n, B)``, ``(B,)`` -> ``(B,)``.
    """
    count, columns = true_positives.shape
    precision = true_positives / (true_positives + false_positives + np.spacing(1))
    envelope = np.ascontiguousarray(np.maximum.accumulate(precision[::-1], axis=0)[::-1].T)
    safe_total = np.where(ground_truth > 0, ground_truth, 1).astype(np.float32)
    # float32 like MONAI, whose recall is a float32 cumulative sum divided by the count.
    recall = np.ascontiguousarray((true_positives.astype(np.float32) / safe_total[None, :]).T)
    precision_at = np.zeros((columns, RECALL_THRESHOLDS.size))
    for column in range(columns):
        index = np.searchsorted(recall[column], RECALL_THRESHOLDS, side="left")
        reached = index < count
        precision_at[column, reached] = envelope[column, index[reached]]
    return np.where(ground_truth > 0, precision_at.mean(axis=1), np.nan)


def scaled_fraction(counts: np.ndarray, total: float, divisor: float) -> np.ndarray:
    """``counts / divisor`` computed as ``(counts / total) * total / divisor``, 0 where ``total`` is 0.

    nnDetection's ``FROCMetric`` and the official LUNA16 script take sklearn's ``roc_curve`` fractions
    (``counts / total``) and scale them back: ``fps = fpr * num_false_positives / num_images`` and
    ``sens = tpr * num_true_positives / num_objects``. That can land one float step away from the exact
    ratio (``(7 / 25) * 25 / 7`` is ``1.0000000000000002``), and where the curve rises vertically at a
    reported rate the step then lies just right of it, so they read its bottom. We compute the same
    floats so that our sensitivities equal theirs bit for bit. Both write 0 when there is no false
    positive; with no true positive their sensitivity is NaN, ours 0.

    Shapes ``(P,)`` -> ``(P,)``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if total == 0:
        return np.zeros_like(counts)
    return counts / total * total / divisor


def _froc_sensitivity(
    true_corners: np.ndarray,
    false_corners: np.ndarray,
    false_total: np.ndarray,
    ground_truth: np.ndarray,
    image_count: np.ndarray,
    false_positives_per_image: np.ndarray,
) -> np.ndarray:
    """Interpolated FROC sensitivities per column from cumulative counts at the curve's corners.

    Shapes ``(P, B)``, ``(P, B)``, ``(B,)``, ``(B,)``, ``(B,)``, ``(F,)`` -> ``(B, F)``; ``false_total``
    counts every false positive, also those after the last corner.
    """
    columns = true_corners.shape[1]
    result = np.full((columns, false_positives_per_image.size), np.nan)
    for column in range(columns):
        if ground_truth[column] > 0:
            true_total = true_corners[-1, column] if true_corners.shape[0] else 0.0
            rates = scaled_fraction(false_corners[:, column], false_total[column], image_count[column])
            found = scaled_fraction(true_corners[:, column], true_total, ground_truth[column])
            x_points = np.concatenate([[0.0], rates])
            y_points = np.concatenate([[0.0], found])
            result[column] = np.interp(false_positives_per_image, x_points, y_points)
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
    image_count = weights.shape[1]
    ground_truth = weights @ np.asarray(ground_truth_per_image, dtype=np.float64)
    images_drawn = weights.sum(axis=1)
    false_mask = np.asarray(false_positive, bool)
    false_total = weights @ np.bincount(np.asarray(detection_image, np.int64)[false_mask], minlength=image_count)
    layout = _layout(np.asarray(scores, float), np.asarray(true_positive, bool), np.asarray(false_positive, bool),
                     np.asarray(detection_image, np.int64), image_count, false_positives_per_image is not None)
    points = None if false_positives_per_image is None else np.asarray(false_positives_per_image, float)
    corner_rows = 0 if layout.froc_true is None else layout.froc_true.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // max(layout.true_images.size, corner_rows, 1))
    precision_parts, recall_parts, froc_parts = [], [], []
    for start in range(0, weights.shape[0], chunk):
        rows = slice(start, start + chunk)
        columns = np.ascontiguousarray(weights[rows].T)  # (I, b)
        true_cumulative = np.cumsum(columns[layout.true_images], axis=0)
        false_cumulative = np.cumsum(layout.precision_false @ columns, axis=0)
        precision_parts.append(_interpolated_precision(true_cumulative, false_cumulative, ground_truth[rows]))
        found = true_cumulative[-1] if true_cumulative.shape[0] else np.zeros(columns.shape[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            recall_parts.append(np.where(ground_truth[rows] > 0, found / ground_truth[rows], np.nan))
        if points is not None:
            true_corners = np.cumsum(layout.froc_true @ columns, axis=0)
            false_corners = np.cumsum(layout.froc_false @ columns, axis=0)
            froc_parts.append(
                _froc_sensitivity(true_corners, false_corners, false_total[rows], ground_truth[rows],
                                  images_drawn[rows], points)
            )
    return CurveStatistics(
        average_precision=np.concatenate(precision_parts),
        recall=np.concatenate(recall_parts),
        ground_truth_count=ground_truth,
        froc_sensitivity=None if points is None else np.concatenate(froc_parts),
    )


def froc_points(
    scores: np.ndarray, is_true: np.ndarray, lesion_count: float, image_count: float
) -> tuple[np.ndarray, np.ndarray]:
    """FROC curve of scored entries: one point per distinct score, starting at (0, 0).

    Args:
        scores: entry scores. Shape ``(E,)``.
        is_true: whether an entry is a true positive (else a false positive). Shape ``(E,)``.
        lesion_count: number of lesions (hit or missed).
        image_count: number of images.

    Returns:
        false positives per image and sensitivity. Shape ``(P,)`` each.
    """
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    sorted_scores, sorted_true = np.asarray(scores, float)[order], np.asarray(is_true, bool)[order]
    ends = np.flatnonzero(np.append(np.diff(sorted_scores) != 0, True)) if order.size else np.zeros(0, int)
    true_cumulative = np.cumsum(sorted_true)[ends]
    false_cumulative = np.cumsum(~sorted_true)[ends]
    true_total, false_total = int(sorted_true.sum()), int((~sorted_true).sum())
    # As nnDetection and the LUNA16 script compute them (see scaled_fraction), not as exact ratios.
    rate = np.concatenate([[0.0], scaled_fraction(false_cumulative, false_total, image_count)])
    found = scaled_fraction(true_cumulative, true_total, lesion_count) if lesion_count else np.zeros(ends.size)
    return rate, np.concatenate([[0.0], found])


def precision_recall_points(
    scores: np.ndarray, is_true: np.ndarray, lesion_count: float
) -> tuple[np.ndarray, np.ndarray]:
    """Raw precision/recall after each detection (by descending score), for plotting.

    Args:
        scores: scores of the counted (not ignored) detections. Shape ``(E,)``.
        is_true: whether each is a true positive. Shape ``(E,)``.
        lesion_count: number of objects.

    Returns:
        recall and precision, starting at recall 0 with precision 1. Shape ``(E + 1,)`` each.
    """
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    true_cumulative = np.cumsum(np.asarray(is_true, bool)[order])
    precision = true_cumulative / np.arange(1, order.size + 1)
    recall = true_cumulative / lesion_count if lesion_count else np.zeros(order.size)
    return np.concatenate([[0.0], recall]), np.concatenate([[1.0], precision])
