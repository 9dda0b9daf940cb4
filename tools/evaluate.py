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

from collections.abc import Sequence

from shared.metrics.detection_metrics import IOU_RANGE, KEY_METRIC
from shared.metrics.evaluation import compare_runs, evaluate_detections, evaluate_luna16_files
from shared.metrics.report import format_value
from tools._cli import run_cli

__all__ = ["detections", "luna16", "compare", "main"]


def detections(
    predictions: str,
    datalist: str,
    out: str,
    split: str = "test",
    iou_thresholds: Sequence[float] = (0.1, 0.5, 0.75),
    iou_range: Sequence[float] = IOU_RANGE,
    froc_iou: float = 0.1,
    class_names: Sequence[str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    max_detections: int = 100,
    data_root: str | None = None,
) -> None:
    """Evaluate a predictions file against one split of a datalist; see ``evaluate_detections``."""
    metrics = evaluate_detections(
        predictions, datalist, out, split=split, iou_thresholds=iou_thresholds, iou_range=iou_range,
        froc_iou=froc_iou, class_names=class_names, bootstrap=bootstrap, seed=seed,
        max_detections=max_detections, data_root=data_root,
    )
    key = KEY_METRIC.replace("MaxDet_100", f"MaxDet_{max_detections}")
    froc = f"FROC_score_IoU_{float(froc_iou):.2f}"
    print(f"{key}: {_percent(metrics, key)}")
    print(f"{froc}: {_percent(metrics, froc)}")
    print(f"written to {out}: metrics.json, report.md, froc.png, pr_curves.png, per_image.npz")


def _percent(metrics: dict, key: str) -> str:
    """A metric in percent, with its 95% interval when ``metrics.json`` has one."""
    return format_value(metrics.get(key), metrics.get(f"{key}_ci95"))


def luna16(
    candidates: str,
    annotations: str,
    out: str,
    excluded: str | None = None,
    seriesuids: str | None = None,
    max_marks: int = 100,
) -> None:
    """LUNA16 CPM of a candidates file; see ``evaluate_luna16_files``."""
    metrics = evaluate_luna16_files(candidates, annotations, out, excluded=excluded, seriesuids=seriesuids,
                                    max_marks=max_marks)
    print(f"CPM: {format_value(metrics['CPM'])} over {int(metrics['num_scans'])} scans, "
          f"{int(metrics['num_nodules'])} nodules")
    print(f"written to {out}: metrics.json, report.md, froc.png")


def compare(
    runs: Sequence[str],
    out: str,
    names: Sequence[str] | None = None,
    metric: str = KEY_METRIC,
    draws: int = 1000,
    seed: int = 0,
) -> None:
    """Rank models by bootstrap over their common test images; see ``compare_runs``."""
    content = compare_runs(runs, out, names=names, metric=metric, draws=draws, seed=seed)
    for name, rank in sorted(content["mean_rank"].items(), key=lambda item: item[1]):
        print(f"{name}: mean rank {rank:.2f}, {metric} {format_value(content['point_estimate'][name])}")
    print(f"written to {out}: metrics.json, report.md, rank_histograms.png")


def _help_from(command, function) -> None:
    """Give ``command`` the argument help of the library ``function`` (one text for both; fire shows it)."""
    arguments = function.__doc__.split("\n    Args:\n", 1)[1].split("\n    Returns:", 1)[0]
    command.__doc__ = f"{command.__doc__.rstrip()}\n\n    Args:\n{arguments.rstrip()}\n    "


_help_from(detections, evaluate_detections)
_help_from(luna16, evaluate_luna16_files)
_help_from(compare, compare_runs)


def main() -> None:
    """Entry point: the fire CLI; input errors print one clear line and exit with status 2."""
    run_cli({"detections": detections, "luna16": luna16, "compare": compare})


if __name__ == "__main__":
    main()
