from __future__ import annotations

import matplotlib
import numpy as np

from shared.metrics.plots import plot_froc, plot_precision_recall, plot_rank_histograms


def test_plots_write_pngs_with_the_agg_backend(tmp_path):
    plot_froc(tmp_path / "froc.png", {"model": (np.array([0, 0.5, 2.0]), np.array([0, 0.4, 0.8]))},
              band=(np.array([0.125, 8]), np.array([0.1, 0.5]), np.array([0.5, 0.9])))
    plot_precision_recall(tmp_path / "pr.png", {"a": (np.array([0, 0.5]), np.array([1, 1]))}, title="PR")
    plot_rank_histograms(tmp_path / "ranks.png", ["x", "y"], np.array([[3, 1], [1, 3]]), metric="AP")
    for name in ("froc.png", "pr.png", "ranks.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend().lower() == "agg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["froc.png", "pr.png", "ranks.png"]
