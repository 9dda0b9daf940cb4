"""Evaluate detections: ``python -m tools.evaluate {detections,luna16,compare} --help``.

- ``detections``: predictions JSON against a decathlon datalist split -> metrics.json, report.md,
  froc.png, pr_curves.png and per_image.npz (what ``compare`` needs).
- ``luna16``: LUNA16 candidates/annotations CSVs -> CPM and the seven sensitivities.
- ``compare``: bootstrap ranking of several ``detections`` outputs on the same images.

A thin command line over :mod:`shared.metrics.evaluation` (library code calls that directly). Each
command prints a short summary, not the whole metrics dictionary (that is in ``metrics.json``); bad
input prints one line and exits with status 2.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from shared.metrics.detection_metrics import KEY_METRIC
from shared.metrics.evaluation import compare_runs, evaluate_detections, evaluate_luna16_files
from shared.metrics.report import format_value
from tools._cli import run_cli

__all__ = ["detections", "luna16", "compare", "main"]


def _summarised(function: Callable[..., dict], summarise: Callable[[dict, dict], list[str]]) -> Callable[..., None]:
    """A command running ``function`` (same arguments and help, for fire) that prints a summary, returns None.

    Fire would otherwise print the whole returned dictionary (about a hundred keys).
    """

    @functools.wraps(function)
    def command(*args, **kwargs) -> None:
        bound = inspect.signature(function).bind(*args, **kwargs)
        bound.apply_defaults()
        for line in summarise(function(*args, **kwargs), bound.arguments):
            print(line)

    return command


def _percent(metrics: dict, key: str) -> str:
    """A metric in percent, with its 95% interval when ``metrics.json`` has one."""
    return format_value(metrics.get(key), metrics.get(f"{key}_ci95"))


def _detections_summary(content: dict, arguments: dict) -> list[str]:
    key = KEY_METRIC.replace("MaxDet_100", f"MaxDet_{arguments['max_detections']}")
    froc = f"FROC_score_IoU_{float(arguments['froc_iou']):.2f}"
    lines = [f"{key}: {_percent(content, key)}", f"{froc}: {_percent(content, froc)}"]
    empty = content.get("count/images_without_predictions", 0)
    if empty:  # often a sign of predictions for another split or paths that did not match
        lines.append(f"images without predictions: {empty} of {content['count/images']} "
                     f"({content['count/images_without_prediction_entry']} without an entry in the predictions file)")
    return lines + [f"written to {arguments['out']}: metrics.json, report.md, froc.png, pr_curves.png, per_image.npz"]


def _luna16_summary(metrics: dict, arguments: dict) -> list[str]:
    return [f"CPM: {format_value(metrics['CPM'])} over {int(metrics['num_scans'])} scans, "
            f"{int(metrics['num_nodules'])} nodules",
            f"written to {arguments['out']}: metrics.json, report.md, froc.png"]


def _compare_summary(content: dict, arguments: dict) -> list[str]:
    ranked = sorted(content["mean_rank"].items(), key=lambda item: item[1])
    lines = [f"{name}: mean rank {rank:.2f}, {content['metric']} {format_value(content['point_estimate'][name])}"
             for name, rank in ranked]
    return lines + [f"written to {arguments['out']}: metrics.json, report.md, rank_histograms.png"]


detections = _summarised(evaluate_detections, _detections_summary)
luna16 = _summarised(evaluate_luna16_files, _luna16_summary)
compare = _summarised(compare_runs, _compare_summary)


def main() -> None:
    """Entry point: the fire CLI; input errors print one clear line and exit with status 2."""
    run_cli({"detections": detections, "luna16": luna16, "compare": compare})


if __name__ == "__main__":
    main()
