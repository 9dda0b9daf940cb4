"""The detection metrics of a test set: AP, mAP, AR, mAR and FROC, per class and overall.

Keys (``t`` an IoU threshold with two decimals, ``k`` the detection cap, ``x`` a false-positive rate):

- ``AP_IoU_<t>_MaxDet_<k>``, ``AR_IoU_<t>_MaxDet_<k>`` for each threshold of ``iou_list``;
- ``mAP_IoU_<a>_<b>_<s>_MaxDet_<k>`` and ``mAR_...``: mean over the IoU range ``a:b:s`` (both ends in);
- ``FROC_score_IoU_<t>`` and ``FROC_sensitivity_IoU_<t>_FPPI_<x>`` (x in 0.125 ... 8), all classes pooled;
- the same keys prefixed by ``<class name>/`` for each class.

AP/AR/mAP/mAR over classes are means over the classes that have ground truth; a class without ground
truth has NaN values (MONAI instead averages a -1 into mAP for such a class, which is a bug we do not
copy). Everything else is identical to ``monai.apps.detection.metrics.coco.COCOMetric``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np

from shared.metrics.curves import (
    FROC_FALSE_POSITIVES_PER_IMAGE,
    CurveStatistics,
    curve_statistics,
    froc_points,
    precision_recall_points,
)
from shared.metrics.records import MatchRecord

__all__ = [
    "IOU_RANGE",
    "KEY_METRIC",
    "iou_range_thresholds",
    "matching_thresholds",
    "metric_key_requirements",
    "metric_table",
    "compute_detection_metrics",
    "curve_points",
    "froc_band",
]

IOU_RANGE = (0.1, 0.5, 0.05)
KEY_METRIC = "AP_IoU_0.10_MaxDet_100"


def iou_range_thresholds(iou_range: Sequence[float]) -> np.ndarray:
    """The thresholds ``start:stop:step`` with both ends, built exactly like MONAI's ``COCOMetric``."""
    start, stop, step = iou_range
    return np.linspace(start, stop, int(np.round((stop - start) / step)) + 1, endpoint=True)


def matching_thresholds(
    iou_list: Sequence[float], iou_range: Sequence[float] | None, froc_iou_thresholds: Sequence[float]
) -> np.ndarray:
    """Every IoU threshold the metrics need, sorted: what :func:`match_detections` must match at."""
    parts = [np.asarray(iou_list, float), np.asarray(froc_iou_thresholds, float)]
    if iou_range is not None:
        parts.append(iou_range_thresholds(iou_range))
    return np.unique(np.concatenate(parts))


def _range_name(iou_range: Sequence[float]) -> str:
    return f"IoU_{iou_range[0]:.2f}_{iou_range[1]:.2f}_{iou_range[2]:.2f}"


def _fppi_name(value: float) -> str:
    return f"{value:g}"


def _mean_over_classes(values: list[np.ndarray]) -> np.ndarray:
    """Mean over classes ignoring NaN (classes without ground truth); NaN where no class has any."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(np.stack(values), axis=0)


def _class_selection(record: MatchRecord, class_index: int | None) -> np.ndarray:
    """Detections of one class (all for ``None``) by descending score; ties keep the record's order."""
    chosen = np.arange(record.detection_score.size)
    if class_index is not None:
        chosen = chosen[record.detection_class == class_index]
    return chosen[np.argsort(-record.detection_score[chosen], kind="stable")]


def _statistics(
    record: MatchRecord,
    selection: np.ndarray,
    threshold_index: int,
    ground_truth_per_image: np.ndarray,
    weights: np.ndarray,
    with_froc: bool,
) -> CurveStatistics:
    matched = record.detection_matched[threshold_index, selection]
    ignored = record.detection_ignored[threshold_index, selection]
    return curve_statistics(
        record.detection_score[selection],
        matched & ~ignored,
        ~matched & ~ignored,
        record.detection_image[selection],
        ground_truth_per_image,
        weights,
        false_positives_per_image=FROC_FALSE_POSITIVES_PER_IMAGE if with_froc else None,
    )


def _froc_keys(prefix: str, threshold: float, sensitivity: np.ndarray) -> dict[str, np.ndarray]:
    table = {f"{prefix}FROC_score_IoU_{threshold:.2f}": sensitivity.mean(axis=1)}
    for column, rate in enumerate(FROC_FALSE_POSITIVES_PER_IMAGE):
        table[f"{prefix}FROC_sensitivity_IoU_{threshold:.2f}_FPPI_{_fppi_name(rate)}"] = sensitivity[:, column]
    return table


def metric_table(
    record: MatchRecord,
    class_names: Sequence[str],
    *,
    iou_list: Sequence[float] = (0.1, 0.5, 0.75),
    iou_range: Sequence[float] | None = IOU_RANGE,
    froc_iou_thresholds: Sequence[float] = (0.1,),
    image_weights: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every metric under one or several image weightings (rows), e.g. bootstrap draws.

    Args:
        record: match results; must contain every threshold asked for.
        class_names: one name per class.
        iou_list: thresholds with their own AP/AR keys.
        iou_range: ``(start, stop, step)`` of mAP/mAR, or ``None`` for none.
        froc_iou_thresholds: thresholds with FROC keys.
        image_weights: how often each image counts per row; ``None``: one row of ones. Shape ``(B, I)``.

    Returns:
        metric key -> values per row. Shape ``(B,)`` each.
    """
    if len(class_names) != record.num_classes:
        raise ValueError(f"{len(class_names)} class names for {record.num_classes} classes.")
    weights = np.ones((1, record.num_images)) if image_weights is None else np.atleast_2d(image_weights)
    cap = record.max_detections
    range_values = [] if iou_range is None else list(iou_range_thresholds(iou_range))
    needed = sorted(set(map(float, iou_list)) | set(map(float, range_values)) | set(map(float, froc_iou_thresholds)))
    froc_set = {record.threshold_index(t) for t in froc_iou_thresholds}
    per_class: dict[str, list[np.ndarray]] = {}
    table: dict[str, np.ndarray] = {}
    for class_index, name in enumerate(class_names):
        selection = _class_selection(record, class_index)
        truth = record.ground_truth_count[:, class_index]
        by_threshold = {}
        for threshold in needed:
            index = record.threshold_index(threshold)
            by_threshold[index] = _statistics(record, selection, index, truth, weights, index in froc_set)
        for threshold in iou_list:
            stats = by_threshold[record.threshold_index(threshold)]
            table[f"{name}/AP_IoU_{threshold:.2f}_MaxDet_{cap}"] = stats.average_precision
            table[f"{name}/AR_IoU_{threshold:.2f}_MaxDet_{cap}"] = stats.recall
        if iou_range is not None:
            range_stats = [by_threshold[record.threshold_index(t)] for t in range_values]
            table[f"{name}/mAP_{_range_name(iou_range)}_MaxDet_{cap}"] = np.mean(
                [s.average_precision for s in range_stats], axis=0
            )
            table[f"{name}/mAR_{_range_name(iou_range)}_MaxDet_{cap}"] = np.mean(
                [s.recall for s in range_stats], axis=0
            )
        for threshold in froc_iou_thresholds:
            stats = by_threshold[record.threshold_index(threshold)]
            table.update(_froc_keys(f"{name}/", threshold, stats.froc_sensitivity))
        for key in [k for k in table if k.startswith(f"{name}/") and "FROC" not in k]:
            per_class.setdefault(key[len(name) + 1 :], []).append(table[key])
    for key, values in per_class.items():
        table[key] = _mean_over_classes(values)
    table.update(_pooled_froc(record, class_names, froc_iou_thresholds, weights, table))
    return table


def _pooled_froc(
    record: MatchRecord,
    class_names: Sequence[str],
    froc_iou_thresholds: Sequence[float],
    weights: np.ndarray,
    table: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """FROC of all classes together (every object weighs the same, as nnDetection's pooled FROC)."""
    pooled: dict[str, np.ndarray] = {}
    for threshold in froc_iou_thresholds:
        if record.num_classes == 1:  # pooled equals the one class: reuse it
            prefix = f"{class_names[0]}/"
            pooled.update({k[len(prefix) :]: v for k, v in table.items() if k.startswith(prefix) and "FROC" in k})
            continue
        index = record.threshold_index(threshold)
        selection = _class_selection(record, None)
        stats = _statistics(record, selection, index, record.ground_truth_count.sum(axis=1), weights, True)
        pooled.update(_froc_keys("", threshold, stats.froc_sensitivity))
    return pooled


def compute_detection_metrics(
    record: MatchRecord,
    class_names: Sequence[str],
    *,
    iou_list: Sequence[float] = (0.1, 0.5, 0.75),
    iou_range: Sequence[float] | None = IOU_RANGE,
    froc_iou_thresholds: Sequence[float] = (0.1,),
) -> dict[str, float]:
    """Every metric of a test set (see the module docstring for the keys).

    Args:
        record: match results of the test set.
        class_names: one name per class.
        iou_list: thresholds with their own AP/AR keys.
        iou_range: ``(start, stop, step)`` of mAP/mAR, or ``None``.
        froc_iou_thresholds: thresholds with FROC keys.

    Returns:
        metric key -> value (NaN where undefined, e.g. a class without ground truth).
    """
    table = metric_table(
        record, class_names, iou_list=iou_list, iou_range=iou_range, froc_iou_thresholds=froc_iou_thresholds
    )
    return {key: float(values[0]) for key, values in table.items()}


_KEY_PATTERNS = {
    "list": re.compile(r"^A[PR]_IoU_(\d\.\d\d)_MaxDet_(\d+)$"),
    "range": re.compile(r"^mA[PR]_IoU_(\d\.\d\d)_(\d\.\d\d)_(\d\.\d\d)_MaxDet_(\d+)$"),
    "froc": re.compile(r"^FROC_(?:score_IoU_(\d\.\d\d)|sensitivity_IoU_(\d\.\d\d)_FPPI_[\d.]+)$"),
}


def metric_key_requirements(key: str) -> dict:
    """The keyword arguments of :func:`metric_table` that produce ``key`` (with or without a class prefix).

    Raises:
        KeyError: for a key that no metric here produces.
    """
    name = key.split("/", 1)[-1]
    if match := _KEY_PATTERNS["list"].match(name):
        return {"iou_list": (float(match[1]),), "iou_range": None, "froc_iou_thresholds": ()}
    if match := _KEY_PATTERNS["range"].match(name):
        return {"iou_list": (), "iou_range": tuple(float(match[i]) for i in (1, 2, 3)), "froc_iou_thresholds": ()}
    if match := _KEY_PATTERNS["froc"].match(name):
        return {"iou_list": (), "iou_range": None, "froc_iou_thresholds": (float(match[1] or match[2]),)}
    raise KeyError(f"Unknown metric key {key!r}; expected e.g. {KEY_METRIC}, mAP_IoU_0.10_0.50_0.05_MaxDet_100 "
                   "or FROC_score_IoU_0.10, optionally prefixed by '<class name>/'.")


def curve_points(record: MatchRecord, class_index: int | None, iou_threshold: float) -> dict[str, np.ndarray]:
    """Plot points of one class (``None``: all classes pooled) at one IoU threshold.

    Args:
        record: match results.
        class_index: the class, or ``None`` to pool every class.
        iou_threshold: a threshold of the record.

    Returns:
        ``recall``/``precision`` (raw, per detection) and ``false_positives_per_image``/``sensitivity``
        (FROC corners). Shapes ``(P,)``.
    """
    index = record.threshold_index(iou_threshold)
    selection = _class_selection(record, class_index)
    counted = selection[~record.detection_ignored[index, selection]]
    is_true = record.detection_matched[index, counted]
    truth = record.ground_truth_count.sum() if class_index is None else record.ground_truth_count[:, class_index].sum()
    recall, precision = precision_recall_points(record.detection_score[counted], is_true, float(truth))
    rate, sensitivity = froc_points(record.detection_score[counted], is_true, float(truth), max(record.num_images, 1))
    return {"recall": recall, "precision": precision, "false_positives_per_image": rate, "sensitivity": sensitivity}


def froc_band(
    record: MatchRecord, iou_threshold: float, image_weights: np.ndarray, rates: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile band of the pooled FROC curve over bootstrap draws.

    Args:
        record: match results.
        iou_threshold: a threshold of the record.
        image_weights: bootstrap counts. Shape ``(B, I)``.
        rates: false positives per image at which to evaluate. Shape ``(R,)``.
        level: coverage.

    Returns:
        lower and upper sensitivity. Shape ``(R,)`` each.
    """
    index = record.threshold_index(iou_threshold)
    selection = _class_selection(record, None)
    matched = record.detection_matched[index, selection]
    ignored = record.detection_ignored[index, selection]
    stats = curve_statistics(
        record.detection_score[selection], matched & ~ignored, ~matched & ~ignored,
        record.detection_image[selection], record.ground_truth_count.sum(axis=1), image_weights,
        false_positives_per_image=tuple(rates),
    )
    tail = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        low, high = np.nanquantile(stats.froc_sensitivity, [tail, 1.0 - tail], axis=0)
    return low, high
