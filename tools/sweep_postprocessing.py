"""Tune the consolidation settings of a trained detector on its validation split.

    python -m tools.sweep_postprocessing --bundle bundles/retina_unet_detection --model_dir DIR \\
        --dataset_dir data/lung_ct [--config_overrides configs/quick.json] \\
        [--cluster_iou 0.3,0.5,0.7] [--score_threshold 0.05,0.1,0.2,0.3] [--min_size 0.01,2,4]

Builds the bundle's detectors as its inference does (the ``detectors`` of ``train.json`` +
``inference.json`` plus override files such as ``quick.json``: ``model_dir/model.pt`` and
``model_dir/model_plan.json``), and runs the sliding window once per cached validation case, keeping
every (tile, flip) stream's detections. Each grid point then only re-clusters those streams (weighted box clustering, score and size filters), so the grid costs one network pass per
case. The setting with the best ``AP_IoU_0.10_MaxDet_100`` (ties: the first in grid order) is written to
``model_dir/postprocessing.json``, which the bundles' ``inference.json`` reads through
:func:`shared.engines.inference.tuned_settings`.

The per-stream post-processing (score threshold, NMS IoU of each tile) stays the detector's own: the
streams are cached after ``detector.predict``, exactly as inference computes them. Only the detector
interface is used (:mod:`shared.detectors.interface`), so any detector a bundle declares can be swept.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from shared.data.cache import list_cases
from shared.data.dataset import ValidationCaseDataset
from shared.engines.inference import POSTPROCESSING_FILE
from shared.inference.sliding_window import VolumeStreams, consolidate_streams, predict_streams, split_settings
from shared.io.atomic import write_json
from shared.io.errors import InputError
from shared.io.writable import check_writable_folder
from shared.metrics.ignite import DetectionMetrics

KEY_METRIC = DetectionMetrics.key_metric
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "cluster_iou": (0.3, 0.5, 0.7),
    "score_threshold": (0.05, 0.1, 0.2, 0.3, 0.5),
    "min_size": (0.01, 2.0, 4.0),
}


def grid_points(grid: dict[str, Sequence[float]]) -> list[dict[str, float]]:
    """Every combination of the grid's values, in the order of its keys (the last varying fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[key] for key in keys))]


def sweep_streams(
    streams: Sequence[VolumeStreams],
    targets: Sequence[dict[str, torch.Tensor]],
    class_names: Sequence[str],
    grid: dict[str, Sequence[float]],
    *,
    detections_per_volume: int = 100,
) -> list[tuple[dict[str, float], float]]:
    """Key metric of each grid point, re-clustering the cached streams of every case.

    Args:
        streams: one :class:`VolumeStreams` per validation case.
        targets: per case ``{"boxes": (N, 6) xyzxyz voxel, "labels": (N,)}`` in the same grid.
        class_names: one name per class.
        grid: values of ``cluster_iou``, ``score_threshold``, ``min_size`` (any subset; keywords of
            :func:`consolidate_streams`).

    Returns:
        ``[(setting, AP_IoU_0.10_MaxDet_100), ...]`` in grid order.
    """
    results = []
    for setting in grid_points(grid):
        metric = DetectionMetrics(class_names, iou_list=(0.1,), iou_range=None)
        for case_streams, target in zip(streams, targets):
            found = consolidate_streams(case_streams, detections_per_volume=detections_per_volume, **setting)
            metric.update(([{key: value.cpu() for key, value in found.items()}], [target]))
        results.append((setting, float(metric.compute()[KEY_METRIC])))
    return results


def best_setting(results: Sequence[tuple[dict[str, float], float]]) -> tuple[dict[str, float], float]:
    """The first setting with the highest metric (NaN, e.g. no ground truth, counts as lowest)."""
    return max(results, key=lambda item: float("-inf") if item[1] != item[1] else item[1])


def _parse_values(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, (int, float)):
        value = [value]
    return tuple(float(v) for v in value)


def _bundle_parts(bundle: str, model_dir: str, dataset_dir: str | None, overrides: Sequence[str]):
    """The trained detectors, the model plan, the cache of the validation cases and the inference settings."""
    from monai.bundle import ConfigParser

    from shared.engines.detection_setup import read_model_plan

    configs = Path(bundle) / "configs"
    files = [configs / "train.json", configs / "inference.json"]
    files += [Path(p) if Path(p).is_file() else configs / p for p in overrides]
    for path in files:
        if not path.is_file():
            raise InputError(path, "config file not found")
    parser = ConfigParser()
    parser.read_config([str(path) for path in files])
    parser["output_dir"] = parser["model_dir"] = str(model_dir)
    if dataset_dir is not None:
        parser["dataset_dir"] = str(dataset_dir)
    plan = read_model_plan(model_dir)
    detectors = parser.get_parsed_content("detectors")
    inference = dict(parser.get_parsed_content("inference"))
    # the cases sit under the key of the preprocessing chain that trained the model (model_plan.json)
    cache_dir = Path(parser.get_parsed_content("cache_dir"))
    if plan.get("cache_key"):
        cache_dir = cache_dir / plan["cache_key"]
    return [detector.eval() for detector in detectors], plan, cache_dir, inference


def collect_streams(detectors, cache_dir: str | os.PathLike, patch_size: Sequence[int], inference: dict[str, Any],
                    *, device: torch.device) -> tuple[list[VolumeStreams], list[dict[str, torch.Tensor]]]:
    """Network pass of a detector (or a list: an ensemble) over every cached validation case.

    Returns:
        (streams, targets) per case: :class:`VolumeStreams` and ``{"boxes": (N, 6), "labels": (N,)}``.
    """
    cases = list_cases(cache_dir, "validation")
    if not cases:
        raise InputError(cache_dir, "no validation cases in the cache: train the bundle first (it preprocesses the "
                                    "validation split into <model_dir>/cache), or pass the model_dir it trained")
    dataset = ValidationCaseDataset(cache_dir, cases)
    stream_settings, _ = split_settings(inference)  # the network pass as the bundle's; clustering is swept
    streams, targets = [], []
    for index in range(len(dataset)):
        case = dataset[index]
        image = case["image"].to(device)
        streams.append(predict_streams(detectors, image, patch_size=patch_size, **stream_settings))
        targets.append({"boxes": case["boxes"], "labels": case["labels"]})
    return streams, targets


def sweep(
    bundle: str,
    model_dir: str,
    dataset_dir: str | None = None,
    config_overrides: str | Sequence[str] = (),
    cluster_iou: Any = DEFAULT_GRID["cluster_iou"],
    score_threshold: Any = DEFAULT_GRID["score_threshold"],
    min_size: Any = DEFAULT_GRID["min_size"],
    device: str | None = None,
) -> dict[str, Any]:
    """Sweep the consolidation settings on the validation split and write ``model_dir/postprocessing.json``.

    Args:
        bundle: the bundle folder (its ``configs/train.json`` and ``inference.json`` build the detectors).
        model_dir: the trained model: ``model.pt``, ``model_plan.json`` and the ``cache`` of training.
        dataset_dir: the data set the bundle trained on (default: the config's).
        config_overrides: extra config files merged over ``train.json`` (names in the bundle's
            ``configs`` or paths), e.g. ``quick.json``; comma-separated or a list.
        cluster_iou, score_threshold, min_size: grid values (comma-separated or lists).
        device: where the network runs (default CUDA when available).

    Returns:
        The written file's content: ``{"settings", "metric", "value", "grid", "results"}``.
    """
    check_writable_folder(model_dir, what="model_dir (postprocessing.json is written there)")
    overrides = config_overrides.split(",") if isinstance(config_overrides, str) else list(config_overrides)
    detectors, plan, cache_dir, inference = _bundle_parts(bundle, model_dir, dataset_dir, [o for o in overrides if o])
    run_on = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    detectors = [detector.to(run_on) for detector in detectors]
    streams, targets = collect_streams(detectors, cache_dir, plan["patch_size"], inference, device=run_on)
    grid = {"cluster_iou": _parse_values(cluster_iou), "score_threshold": _parse_values(score_threshold),
            "min_size": _parse_values(min_size)}
    results = sweep_streams(streams, targets, plan["class_names"], grid,
                            detections_per_volume=int(inference.get("detections_per_volume", 100)))
    settings, value = best_setting(results)
    content = {"settings": settings, "metric": KEY_METRIC, "value": value, "grid": grid,
               "results": [{**setting, KEY_METRIC: metric} for setting, metric in results],
               "validation_cases": len(streams)}
    write_json(Path(model_dir) / POSTPROCESSING_FILE, content)
    print(format_table(results, settings))
    return content


def format_table(results: Sequence[tuple[dict[str, float], float]], best: dict[str, float]) -> str:
    """Markdown table of the grid, the chosen row marked."""
    keys = list(results[0][0]) if results else []
    lines = ["| " + " | ".join(keys + [KEY_METRIC, "best"]) + " |", "|" + "---|" * (len(keys) + 2)]
    for setting, value in results:
        cells = [f"{setting[key]:g}" for key in keys] + [f"{value:.4f}", "**x**" if setting == best else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    from tools._cli import run_cli

    def main(*args, **kwargs) -> None:
        """Command line: the table is printed, the returned content is not."""
        sweep(*args, **kwargs)

    main.__doc__ = sweep.__doc__
    run_cli(main)
