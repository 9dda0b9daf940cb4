"""The markdown reports a person reads, and metric values made ready for strict JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from shared.metrics.curves import FROC_FALSE_POSITIVES_PER_IMAGE

__all__ = ["json_ready", "detection_report", "ranking_report", "luna16_report", "format_value"]


def json_ready(value):
    """``value`` with numpy numbers as Python numbers, NaN as ``None`` (strict JSON has none), keys sorted."""
    if isinstance(value, dict):
        return {key: json_ready(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def format_value(value: float | None, interval: Sequence[float] | None = None) -> str:
    """A metric as a percentage with two decimals (and its interval), or a dash when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no ground truth"
    text = f"{100 * value:.2f}"
    if interval is not None and not any(v is None or math.isnan(v) for v in interval):
        text += f" [{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def detection_report(
    metrics: dict[str, float],
    intervals: dict[str, list[float]],
    class_names: Sequence[str],
    counts: dict[str, int],
    *,
    iou_list: Sequence[float],
    iou_range_name: str,
    froc_iou: float,
    max_detections: int,
) -> str:
    """Markdown report of a detection evaluation.

    Args:
        metrics: the metric dictionary.
        intervals: ``<key>`` -> 95% interval (may be empty).
        class_names: one name per class.
        counts: ``images``, ``images_without_predictions`` (no box, with or without an entry),
            ``images_without_prediction_entry``, ``ground_truth``, ``ground_truth_per_class`` and
            ``predictions``.
        iou_list: thresholds with their own AP keys.
        iou_range_name: e.g. ``IoU_0.10_0.50_0.05``.
        froc_iou: the FROC IoU threshold.
        max_detections: the detection cap.
    """
    cap = max_detections
    lines = ["# Detection evaluation", ""]
    lines += [f"- images evaluated: {counts['images']}",
              f"- images without any prediction: {counts['images_without_predictions']}",
              "- images with no prediction entry (counted as no detections): "
              f"{counts['images_without_prediction_entry']}",
              f"- predictions: {counts['predictions']}",
              f"- ground-truth objects: {counts['ground_truth']}", ""]
    legend = "Values in percent; brackets: 95% bootstrap interval over images." if intervals else "Values in percent."
    lines += [legend, ""]
    keys = [f"AP_IoU_{t:.2f}_MaxDet_{cap}" for t in iou_list] + [f"m{'AP'}_{iou_range_name}_MaxDet_{cap}"]
    keys += [f"AR_IoU_{t:.2f}_MaxDet_{cap}" for t in iou_list] + [f"mAR_{iou_range_name}_MaxDet_{cap}"]
    keys += [f"FROC_score_IoU_{froc_iou:.2f}"]
    overall = [[key, format_value(metrics.get(key), intervals.get(key))] for key in keys]
    lines += ["## Overall", ""] + _table(["metric", "value"], overall)
    header = ["class", "objects"] + keys
    rows = [[name, str(counts["ground_truth_per_class"][i])]
            + [format_value(metrics.get(f"{name}/{k}"), intervals.get(f"{name}/{k}")) for k in keys]
            for i, name in enumerate(class_names)]
    lines += ["", "## Per class", ""] + _table(header, rows)
    froc_header = ["scope"] + [f"FPPI {x:g}" for x in FROC_FALSE_POSITIVES_PER_IMAGE] + ["score"]
    froc_rows = []
    for scope, prefix in [("all classes", "")] + [(name, f"{name}/") for name in class_names]:
        row = [scope] + [format_value(metrics.get(f"{prefix}FROC_sensitivity_IoU_{froc_iou:.2f}_FPPI_{x:g}"))
                         for x in FROC_FALSE_POSITIVES_PER_IMAGE]
        froc_rows.append(row + [format_value(metrics.get(f"{prefix}FROC_score_IoU_{froc_iou:.2f}"))])
    lines += ["", f"## FROC at IoU {froc_iou:.2f} (sensitivity at false positives per image)", ""]
    lines += _table(froc_header, froc_rows)
    return "\n".join(lines) + "\n"


def ranking_report(names: Sequence[str], mean_rank: np.ndarray, histogram: np.ndarray, point: np.ndarray,
                   *, metric: str, draws: int, image_count: int) -> str:
    """Markdown table of mean bootstrap ranks, best first."""
    order = np.argsort(mean_rank, kind="stable")
    header = ["model", "mean rank", metric] + [f"rank {r + 1}" for r in range(len(names))]
    rows = [[names[m], f"{mean_rank[m]:.2f}", format_value(float(point[m]))] + [str(int(c)) for c in histogram[m]]
            for m in order]
    lines = ["# Model ranking", "", f"Bootstrap over {image_count} images, {draws} draws; rank 1 is best; "
             "ties share the best rank.", ""]
    return "\n".join(lines + _table(header, rows)) + "\n"


def luna16_report(metrics: dict[str, float], unknown_candidate_scans: int) -> str:
    """Markdown report of a LUNA16 evaluation."""
    lines = ["# LUNA16 evaluation", "",
             f"- scans: {int(metrics['num_scans'])}, nodules: {int(metrics['num_nodules'])}, "
             f"hit: {int(metrics['num_nodules_hit'])}, false positives: {int(metrics['num_false_positives'])}",
             f"- further hits on an already hit nodule (ignored): {int(metrics['num_duplicate_hits_ignored'])}",
             f"- candidate rows of scans outside the evaluated list (not used): {unknown_candidate_scans}", ""]
    rows = [[f"{x:g}", format_value(metrics[f"sensitivity_FPPI_{x:g}"])] for x in FROC_FALSE_POSITIVES_PER_IMAGE]
    rows.append(["CPM", format_value(metrics["CPM"])])
    return "\n".join(lines + _table(["false positives per scan", "sensitivity (%)"], rows)) + "\n"
