"""Bootstrap over images: confidence intervals of every metric and rankings of several models.

A draw samples the test images with replacement; an image drawn ``k`` times counts ``k`` times. Draws
are represented as a ``(draws, images)`` matrix of counts and evaluated together by
:func:`shared.metrics.detection_metrics.metric_table`, which re-aggregates the stored match results
(no box is matched again). Models compared on the same draw see the same images.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from shared.metrics.detection_metrics import metric_key_requirements, metric_table
from shared.metrics.records import MatchRecord

__all__ = [
    "bootstrap_weights",
    "confidence_intervals",
    "bootstrap_metric_draws",
    "RankingResult",
    "bootstrap_ranking",
]


def bootstrap_weights(image_count: int, draws: int, seed: int = 0) -> np.ndarray:
    """How often each image is drawn in each bootstrap draw.

    Args:
        image_count: number of images ``I``.
        draws: number of draws ``B``.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        counts, each row summing to ``I``. Shape ``(B, I)``.
    """
    generator = np.random.default_rng(seed)
    picks = generator.integers(0, image_count, size=(draws, image_count))
    flat = (picks + np.arange(draws)[:, None] * image_count).ravel()
    return np.bincount(flat, minlength=draws * image_count).reshape(draws, image_count).astype(np.float64)


def confidence_intervals(draws: dict[str, np.ndarray], level: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals ``[lo, hi]`` of each metric over the draws (NaN draws left out).

    Args:
        draws: metric key -> values per draw. Shape ``(B,)``.
        level: coverage of the interval.

    Returns:
        metric key -> ``[lo, hi]`` (NaN where every draw is NaN).
    """
    tail = (1.0 - level) / 2.0
    intervals = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        for key, values in draws.items():
            low, high = np.nanquantile(values, [tail, 1.0 - tail])
            intervals[key] = [float(low), float(high)]
    return intervals


def bootstrap_metric_draws(
    record: MatchRecord,
    class_names: Sequence[str],
    *,
    draws: int = 1000,
    seed: int = 0,
    **metric_arguments,
) -> dict[str, np.ndarray]:
    """Every metric of :func:`metric_table` on each bootstrap draw.

    Args:
        record: match results of the test set.
        class_names: one name per class.
        draws: number of draws.
        seed: seed of the draws.
        **metric_arguments: ``iou_list``, ``iou_range``, ``froc_iou_thresholds`` of :func:`metric_table`.

    Returns:
        metric key -> values per draw. Shape ``(draws,)``.
    """
    weights = bootstrap_weights(record.num_images, draws, seed)
    return metric_table(record, class_names, image_weights=weights, **metric_arguments)


@dataclasses.dataclass(frozen=True)
class RankingResult:
    """Ranks of several models over bootstrap draws (rank 1 is best).

    Attributes:
        metric: the metric ranked.
        mean_rank: mean rank of each model. Shape ``(M,)``.
        rank_histogram: how many draws put model ``m`` at rank ``r + 1``. Shape ``(M, M)``.
        metric_draws: the metric of each model on each draw. Shape ``(M, B)``.
        point_estimate: the metric of each model on the full test set. Shape ``(M,)``.
    """

    metric: str
    mean_rank: np.ndarray
    rank_histogram: np.ndarray
    metric_draws: np.ndarray
    point_estimate: np.ndarray


def bootstrap_ranking(
    records: Sequence[MatchRecord],
    class_names: Sequence[str],
    metric: str = "AP_IoU_0.10_MaxDet_100",
    *,
    draws: int = 1000,
    seed: int = 0,
) -> RankingResult:
    """Rank models on bootstrap draws of their common test set, as the paper's figure 3.

    In each draw the models are ranked by ``metric`` (higher is better); tied models share the best of
    their ranks ("1224" ranking). A draw where the metric is undefined (NaN, e.g. no ground truth
    drawn) ranks that model last.

    Args:
        records: one per model, all over the same images in the same order.
        class_names: one name per class.
        metric: a key of :func:`metric_table`, e.g. ``AP_IoU_0.10_MaxDet_100``.
        draws: number of draws.
        seed: seed of the draws (the same draws for every model).

    Returns:
        the :class:`RankingResult`.
    """
    image_count = records[0].num_images
    if any(record.num_images != image_count for record in records):
        raise ValueError("Every model must be evaluated on the same images to be ranked.")
    requirements = metric_key_requirements(metric)
    weights = bootstrap_weights(image_count, draws, seed)
    values, point = [], []
    for record in records:
        table = metric_table(record, class_names, image_weights=weights, **requirements)
        if metric not in table:
            raise KeyError(f"Metric {metric!r} is not produced; produced keys: {sorted(table)}.")
        values.append(table[metric])
        point.append(float(metric_table(record, class_names, **requirements)[metric][0]))
    metric_draws = np.stack(values)
    # rankdata ranks ascending: rank the negated metric, NaN (undefined) last.
    ranks = rankdata(np.where(np.isnan(metric_draws), np.inf, -metric_draws), method="min", axis=0)
    model_count = len(records)
    histogram = np.stack([np.bincount(ranks[m] - 1, minlength=model_count) for m in range(model_count)])
    return RankingResult(metric, ranks.mean(axis=1), histogram, metric_draws, np.asarray(point))
