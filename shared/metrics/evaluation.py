"""Evaluate predictions from library code: detections vs a datalist, LUNA16 CSVs, bootstrap ranking of runs.

Each function reads its inputs, computes the metrics and writes ``metrics.json``, ``report.md``, plots (and
for detections ``per_image.npz``, what :func:`compare_runs` reads) into ``out``; every file is written
atomically, and on bad input nothing is written and :class:`EvaluationInputError` names the file, the
image and the field. The output folder is checked first (it must be, or be creatable as, a writable
folder), so an unwritable ``out`` fails in a second rather than after the matching and the bootstrap.
``tools/evaluate.py`` is the command line over these functions.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared.io.atomic import atomic_path, write_json, write_text
from shared.io.errors import InputError
from shared.io.writable import check_writable_folder
from shared.metrics import options
from shared.metrics.bootstrap import bootstrap_metric_draws, bootstrap_ranking, bootstrap_weights, confidence_intervals
from shared.metrics.detection_metrics import (
    IOU_RANGE,
    KEY_METRIC,
    compute_detection_metrics,
    curve_points,
    froc_band,
    matching_thresholds,
)
from shared.metrics.errors import EvaluationInputError
from shared.metrics.inputs import load_ground_truth, load_predictions
from shared.metrics.luna16 import FindingTable, evaluate_luna16
from shared.metrics.matching import match_detections
from shared.metrics.plots import plot_froc, plot_precision_recall, plot_rank_histograms
from shared.metrics.records import MatchRecord
from shared.metrics.report import detection_report, json_ready, luna16_report, ranking_report

__all__ = ["evaluate_detections", "evaluate_luna16_files", "compare_runs", "RECORD_FILE"]

RECORD_FILE = "per_image.npz"


def _check_output_folder(out: str | Path) -> None:
    """Refuse an ``out`` that cannot be written (below a file, read-only, immutable); creates nothing."""
    try:
        check_writable_folder(out)
    except InputError as error:
        raise EvaluationInputError(error.problem, source=error.source) from None


def _output_folder(out: str | Path) -> Path:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def evaluate_detections(
    predictions: str | Path,
    datalist: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    iou_thresholds: Sequence[float] = (0.1, 0.5, 0.75),
    iou_range: Sequence[float] = IOU_RANGE,
    froc_iou: float = 0.1,
    class_names: Sequence[str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    max_detections: int = 100,
    data_root: str | Path | None = None,
) -> dict:
    """Evaluate a predictions file against one split of a datalist.

    Args:
        predictions: JSON list of ``{"image", "box" (cccwhd mm), "label", "label_scores"}``.
        datalist: decathlon-style datalist with the ground truth.
        out: output folder.
        split: datalist key to evaluate.
        iou_thresholds: thresholds with their own AP/AR keys.
        iou_range: ``start,stop,step`` of mAP/mAR.
        froc_iou: IoU threshold of the FROC (0.3 for aneurysm-style tasks).
        class_names: class names, index order (default ``class_0``...).
        bootstrap: number of bootstrap draws for intervals (0: none).
        seed: seed of the draws.
        max_detections: detections kept per image and class.
        data_root: folder the datalist's relative image paths are relative to (default: its folder).

    Returns:
        the content of ``metrics.json``: the metrics, ``<key>_ci95`` intervals (with ``bootstrap``) and
        ``count/<what>`` counts.
    """
    _check_output_folder(out)
    iou_list = options.iou_thresholds(iou_thresholds, "iou_thresholds")
    iou_range = options.iou_range(iou_range)
    froc_iou = options.iou_threshold(froc_iou, "froc_iou")
    max_detections = options.count(max_detections, "max_detections", 1)
    bootstrap = options.count(bootstrap, "bootstrap", 0)
    truth = load_ground_truth(datalist, split, data_root=data_root,
                              class_names=options.as_list(class_names, str, "class_names"))
    found = load_predictions(predictions, truth, data_root=data_root)
    names = truth.class_names
    record = match_detections(
        found.boxes, found.labels, found.scores, truth.boxes, truth.labels, num_classes=len(names),
        iou_thresholds=matching_thresholds(iou_list, iou_range, [froc_iou]), max_detections=max_detections,
    )
    arguments = {"iou_list": iou_list, "iou_range": iou_range, "froc_iou_thresholds": (froc_iou,)}
    metrics = compute_detection_metrics(record, names, **arguments)
    intervals, band = {}, None
    if bootstrap:
        intervals = confidence_intervals(bootstrap_metric_draws(record, names, draws=bootstrap, seed=seed, **arguments))
        rates = np.geomspace(0.125, 8.0, 49)
        band = (rates, *froc_band(record, froc_iou, bootstrap_weights(record.num_images, bootstrap, seed), rates))
    counts = {
        "images": record.num_images,
        "images_without_predictions": sum(len(image_scores) == 0 for image_scores in found.scores),
        "images_without_prediction_entry": len(found.images_without_entry),
        "predictions": int(sum(len(s) for s in found.scores)),
        "ground_truth": int(record.ground_truth_count.sum()),
        "ground_truth_per_class": record.ground_truth_count.sum(axis=0).tolist(),
    }
    folder = _output_folder(out)
    return _write_detection_outputs(folder, record, truth.image_ids, names, metrics, intervals, band, counts,
                                    arguments, max_detections)


def _write_detection_outputs(
    folder, record, image_ids, names, metrics, intervals, band, counts, arguments, cap
) -> dict:
    """Write plots, ``per_image.npz``, ``metrics.json`` and ``report.md``; return the ``metrics.json`` content."""
    froc_iou = arguments["froc_iou_thresholds"][0]
    pooled = curve_points(record, None, froc_iou)
    plot_froc(folder / "froc.png", {"all classes": (pooled["false_positives_per_image"], pooled["sensitivity"])},
              band=band, title=f"FROC at IoU {froc_iou:.2f}")
    pr_iou = arguments["iou_list"][0] if arguments["iou_list"] else froc_iou
    pr = {name: curve_points(record, index, pr_iou) for index, name in enumerate(names)}
    plot_precision_recall(folder / "pr_curves.png", {n: (p["recall"], p["precision"]) for n, p in pr.items()},
                          title=f"Precision/recall at IoU {pr_iou:.2f}")
    extra = {"image_ids": np.asarray(image_ids, dtype=str), "class_names": np.asarray(names, dtype=str)}
    with atomic_path(folder / RECORD_FILE) as temporary:
        record.save(temporary, **extra)
    content = dict(metrics)
    content.update({f"{key}_ci95": value for key, value in intervals.items()})
    content.update({f"count/{key}": value for key, value in counts.items() if key != "ground_truth_per_class"})
    write_json(folder / "metrics.json", json_ready(content))
    range_name = "IoU_{:.2f}_{:.2f}_{:.2f}".format(*arguments["iou_range"])
    write_text(folder / "report.md", detection_report(
        metrics, intervals, names, counts, iou_list=arguments["iou_list"], iou_range_name=range_name,
        froc_iou=froc_iou, max_detections=cap))
    return content


def _csv_rows(path: str | Path) -> list[list[str]]:
    """Every row of a CSV file, with one clear error for a missing, folder, binary or unreadable file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheet exports start with a BOM
            return list(csv.reader(handle))
    except FileNotFoundError as error:
        raise EvaluationInputError(f"{path}: file not found.") from error
    except IsADirectoryError as error:
        raise EvaluationInputError(f"{path}: is a folder, not a CSV file; give the file inside it.") from error
    except UnicodeDecodeError as error:
        raise EvaluationInputError(f"{path}: not a CSV text file (binary content at byte {error.start}).") from error
    except (OSError, csv.Error) as error:
        raise EvaluationInputError(f"{path}: cannot be read as CSV ({error}).") from error


def _read_findings(path: str | Path, value_column: str) -> FindingTable:
    """Read a LUNA16 CSV (``seriesuid,coordX,coordY,coordZ,<value_column>``); errors name the line."""
    rows = _csv_rows(path)
    needed = ["seriesuid", "coordX", "coordY", "coordZ", value_column]
    if not rows:
        return FindingTable.empty()
    header = [name.strip() for name in rows[0]]
    if any(column not in header for column in needed):
        raise EvaluationInputError(f"{path}: needs the columns {needed}, got {header}.")
    position = [header.index(column) for column in needed]
    scans, numbers = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        where = f"{path}: line {line} (seriesuid {row[position[0]] if position[0] < len(row) else '?'})"
        values = []
        for column, index in zip(needed[1:], position[1:]):
            if index >= len(row) or not row[index].strip():
                raise EvaluationInputError(f"{where}: no {column} (the row has {len(row)} of {len(header)} columns).")
            try:
                values.append(float(row[index]))
            except ValueError:
                raise EvaluationInputError(f"{where}: {column} {row[index]!r} is not a number.") from None
        if not np.isfinite(values).all():
            raise EvaluationInputError(f"{where}: NaN or infinite values in a coordinate or {value_column}.")
        scans.append(row[position[0]])
        numbers.append(values)
    table = np.array(numbers, dtype=np.float64).reshape(-1, 4)
    return FindingTable(np.array(scans, dtype=str), table[:, :3], table[:, 3])


def _read_series(path: str | Path) -> list[str]:
    series = [row[0].strip() for row in _csv_rows(path) if row and row[0].strip()]
    return series[1:] if series and series[0] == "seriesuid" else series


def evaluate_luna16_files(
    candidates: str | Path,
    annotations: str | Path,
    out: str | Path,
    *,
    excluded: str | Path | None = None,
    seriesuids: str | Path | None = None,
    max_marks: int = 100,
) -> dict[str, float]:
    """LUNA16 CPM of a candidates CSV (the CSV front end of :func:`shared.metrics.luna16.evaluate_luna16`).

    Args:
        candidates: CSV ``seriesuid,coordX,coordY,coordZ,probability`` (world mm).
        annotations: CSV ``seriesuid,coordX,coordY,coordZ,diameter_mm``.
        out: output folder.
        excluded: CSV like ``annotations`` of irrelevant findings (diameter -1: 10 mm).
        seriesuids: one series UID per line, the scans evaluated (default: every scan named in the
            annotations, excluded findings or candidates; give it for official numbers, since scans
            without any row are otherwise not counted).
        max_marks: candidates kept per scan.

    Returns:
        the metrics written to ``metrics.json``.
    """
    _check_output_folder(out)
    max_marks = options.count(max_marks, "max_marks", 1)
    marks = _read_findings(candidates, "probability")
    nodules = _read_findings(annotations, "diameter_mm")
    irrelevant = _read_findings(excluded, "diameter_mm") if excluded else FindingTable.empty()
    if seriesuids:
        scans = _read_series(seriesuids)
    else:
        scans = sorted(set(marks.scan) | set(nodules.scan) | set(irrelevant.scan))
    result = evaluate_luna16(marks, nodules, scans, irrelevant, max_marks=max_marks)
    unknown = int((~np.isin(marks.scan, scans)).sum())
    folder = _output_folder(out)
    plot_froc(folder / "froc.png", {"CAD": (result.false_positives_per_image, result.sensitivity)},
              title="LUNA16 FROC")
    write_json(folder / "metrics.json", json_ready(result.metrics))
    write_text(folder / "report.md", luna16_report(result.metrics, unknown))
    return result.metrics


def _load_run(folder: str | Path) -> tuple[MatchRecord, list[str], list[str]]:
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        raise EvaluationInputError(f"{path}: not found; evaluate the run with evaluate_detections (`python -m tools.evaluate detections`) first.")
    try:
        record, extra = MatchRecord.load(path)
        image_ids, class_names = extra["image_ids"], extra["class_names"]
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:  # not our npz
        raise EvaluationInputError(f"{path}: not a record written by evaluate_detections ({error}); evaluate "
                                   "the run again.") from error
    return record, [str(i) for i in image_ids], [str(n) for n in class_names]


def compare_runs(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    names: Sequence[str] | None = None,
    metric: str = KEY_METRIC,
    draws: int = 1000,
    seed: int = 0,
) -> dict:
    """Rank models by bootstrap over their common test images (the paper's figure 3).

    Args:
        runs: output folders of :func:`evaluate_detections` (each holds ``per_image.npz``).
        out: output folder.
        names: model names (default: the folder names).
        metric: metric to rank by, e.g. ``AP_IoU_0.10_MaxDet_100`` or ``FROC_score_IoU_0.10``.
        draws: bootstrap draws.
        seed: seed of the draws.

    Returns:
        the content written to ``metrics.json``.
    """
    _check_output_folder(out)
    runs = options.as_list(runs, str, "runs")
    model_names = options.as_list(names, str, "names") or [Path(run).name for run in runs]
    draws = options.count(draws, "draws", 1)
    if len(model_names) != len(runs):
        raise EvaluationInputError(f"{len(model_names)} names for {len(runs)} runs.")
    loaded = [_load_run(run) for run in runs]
    reference_images, reference_classes = loaded[0][1], loaded[0][2]
    records = []
    for run, (record, images, classes) in zip(runs, loaded):
        if sorted(images) != sorted(reference_images):
            missing = sorted(set(reference_images) ^ set(images))[:3]
            raise EvaluationInputError(
                f"{run}: evaluated on other images than {runs[0]} (e.g. {missing}); ranking needs the same test set."
            )
        if classes != reference_classes:
            raise EvaluationInputError(f"{run}: classes {classes} differ from {reference_classes} of {runs[0]}.")
        position = {image: index for index, image in enumerate(images)}
        records.append(record.select_images([position[image] for image in reference_images]))
    try:
        ranking = bootstrap_ranking(records, reference_classes, metric, draws=draws, seed=seed)
    except KeyError as error:
        raise EvaluationInputError(str(error)) from error
    content = {
        "metric": metric, "draws": draws, "seed": seed, "images": len(reference_images),
        "mean_rank": dict(zip(model_names, ranking.mean_rank.tolist())),
        "rank_histogram": dict(zip(model_names, ranking.rank_histogram.tolist())),
        "point_estimate": dict(zip(model_names, ranking.point_estimate.tolist())),
    }
    folder = _output_folder(out)
    plot_rank_histograms(folder / "rank_histograms.png", model_names, ranking.rank_histogram, metric=metric)
    write_json(folder / "metrics.json", json_ready(content))
    write_text(folder / "report.md", ranking_report(
        model_names, ranking.mean_rank, ranking.rank_histogram, ranking.point_estimate, metric=metric, draws=draws,
        image_count=len(reference_images)))
    return content
