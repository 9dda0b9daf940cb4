"""Figures of an evaluation: FROC curves with a bootstrap band, precision/recall curves, rank histograms.

matplotlib runs with the Agg backend (no display); every figure is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from shared.io.atomic import atomic_path  # noqa: E402
from shared.metrics.curves import FROC_FALSE_POSITIVES_PER_IMAGE  # noqa: E402

__all__ = ["save_figure", "plot_froc", "plot_precision_recall", "plot_rank_histograms"]


def save_figure(figure: plt.Figure, path: str | Path) -> None:
    """Write a PNG atomically (temporary file in the same folder, then rename) and close the figure."""
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)


def plot_froc(
    path: str | Path,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    band: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    title: str = "FROC",
) -> None:
    """FROC curves on a log2 false-positives-per-image axis from 1/8 to 8.

    Args:
        path: PNG to write.
        curves: label -> (false positives per image, sensitivity) points. Shape ``(P,)`` each.
        band: optional bootstrap band (rates, low, high) drawn around the first curve. Shape ``(R,)`` each.
        title: figure title.
    """
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for label, (rate, sensitivity) in curves.items():
        # Beyond its last point the curve stays flat (no further detections), as the interpolation does.
        last = FROC_FALSE_POSITIVES_PER_IMAGE[-1]
        rate_shown = np.append(rate, last) if rate.size and rate[-1] < last else rate
        sensitivity_shown = np.append(sensitivity, sensitivity[-1]) if rate_shown.size > rate.size else sensitivity
        axis.plot(rate_shown, sensitivity_shown, lw=2, label=label)
    if band is not None:
        axis.fill_between(band[0], band[1], band[2], alpha=0.2, label="95% bootstrap band")
    axis.set_xscale("log", base=2)
    axis.set_xlim(FROC_FALSE_POSITIVES_PER_IMAGE[0], FROC_FALSE_POSITIVES_PER_IMAGE[-1])
    axis.set_xticks(FROC_FALSE_POSITIVES_PER_IMAGE, [f"{value:g}" for value in FROC_FALSE_POSITIVES_PER_IMAGE])
    axis.set_ylim(0, 1)
    axis.set_xlabel("False positives per image")
    axis.set_ylabel("Sensitivity")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="upper left")  # FROC curves rise to the right: the upper left stays empty
    save_figure(figure, path)


def plot_precision_recall(path: str | Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], *, title: str) -> None:
    """Precision/recall curves, one per class.

    Args:
        path: PNG to write.
        curves: class name -> (recall, precision) points. Shape ``(P,)`` each.
        title: figure title.
    """
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for label, (recall, precision) in curves.items():
        axis.step(recall, precision, where="post", lw=2, label=label)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("Recall")
    axis.set_ylabel("Precision")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    if curves:
        axis.legend(loc="lower left")
    save_figure(figure, path)


def _percent(share: float) -> str:
    """A share of draws as a bar label: none for 0, "<1%" for a few draws."""
    return "" if share == 0 else "<1%" if share < 0.005 else f"{share:.0%}"


def plot_rank_histograms(path: str | Path, names: Sequence[str], histogram: np.ndarray, *, metric: str) -> None:
    """Bar chart per model of how often each rank was reached over the bootstrap draws (paper fig. 3).

    Args:
        path: PNG to write.
        names: model names.
        histogram: draws at rank ``r + 1`` per model. Shape ``(M, M)``.
        metric: the ranked metric, for the title.
    """
    model_count = len(names)
    figure, axes = plt.subplots(model_count, 1, figsize=(6, 1.2 + 1.0 * model_count), sharex=True, squeeze=False)
    ranks = np.arange(1, model_count + 1)
    total = max(int(histogram.sum(axis=1).max()), 1)
    for row, name in enumerate(names):
        axis = axes[row, 0]
        shares = histogram[row] / total
        bars = axis.bar(ranks, shares, color=f"C{row % 10}")
        # the share of draws on each bar: the bars alone leave the reader guessing
        axis.bar_label(bars, labels=[_percent(share) for share in shares], padding=2, fontsize=8)
        axis.set_ylabel(name, rotation=0, ha="right", va="center")
        axis.set_ylim(0, 1.3)
        axis.set_yticks([])
    axes[-1, 0].set_xticks(ranks)
    axes[-1, 0].set_xlabel("Rank (1 = best)")
    axes[0, 0].set_title(f"Bootstrap rank distribution ({metric})")
    save_figure(figure, path)
