from __future__ import annotations

import json

import numpy as np
import pytest

from shared.detectors.anchor_fitting import centred_iou, fit_anchor_sizes, mean_best_iou


def _boxes(rng, shapes, count):
    """Boxes of the given shapes (±5 % jitter) at random positions."""
    chosen = np.asarray(shapes, dtype=float)[rng.integers(0, len(shapes), count)]
    chosen = chosen * rng.uniform(0.95, 1.05, chosen.shape)
    origin = rng.uniform(0, 100, (count, 3))
    return np.concatenate([origin, origin + chosen], axis=1)


def test_centred_iou_golden():
    iou = centred_iou(np.array([[2.0, 2, 2]]), np.array([[2.0, 2, 2], [1.0, 2, 2], [4.0, 2, 2]]))
    np.testing.assert_allclose(iou, [[1.0, 0.5, 0.5]])


def test_fit_recovers_a_single_box_shape_exactly():
    boxes = np.tile([[0.0, 0, 0, 7, 9, 5]], (50, 1))
    sizes = fit_anchor_sizes(boxes, [4])
    assert mean_best_iou(boxes[:, 3:], sizes, [4]) > 0.99


def test_fit_beats_a_naive_grid_on_anisotropic_clusters(rng):
    boxes = _boxes(rng, [(6, 6, 3), (12, 10, 5), (24, 20, 9)], 300)
    strides = [4, 8, 16]
    shapes = boxes[:, 3:] - boxes[:, :3]
    fitted = fit_anchor_sizes(boxes, strides)
    naive = [[4.0, 8.0, 16.0]] * 3
    assert mean_best_iou(shapes, fitted, strides) > 0.85
    assert mean_best_iou(shapes, fitted, strides) > mean_best_iou(shapes, naive, strides) + 0.1
    json.dumps(fitted)  # plain lists of floats go into a bundle config
    assert all(len(axis) == 3 and axis == sorted(axis) for axis in fitted)


def test_fit_needs_boxes():
    with pytest.raises(ValueError, match="at least one"):
        fit_anchor_sizes(np.zeros((0, 6)), [4])


def test_anchor_levels_scale_per_axis_with_anisotropic_strides():
    box = np.array([[8.0, 8.0, 2.0]])
    # the second level is pooled in-plane only: its anchor is (8, 8, 2), not (8, 8, 4)
    assert mean_best_iou(box, [[4.0], [4.0], [2.0]], [(1, 1, 1), (2, 2, 1)]) == pytest.approx(1.0)
    assert mean_best_iou(box, [[4.0], [4.0], [2.0]], [1, 2]) == pytest.approx(0.5)
    sizes = fit_anchor_sizes(np.array([[0, 0, 0, 8, 8, 2.0]]), [(1, 1, 1), (2, 2, 1)])
    assert mean_best_iou(box, sizes, [(1, 1, 1), (2, 2, 1)]) == pytest.approx(1.0, abs=1e-3)
