from __future__ import annotations

import numpy as np
import pytest

from shared.metrics.luna16 import FindingTable, evaluate_luna16, luna16_sensitivities


def _table(rows):
    scans = np.array([r[0] for r in rows], dtype=str)
    centres = np.array([r[1:4] for r in rows], float).reshape(-1, 3)
    return FindingTable(scans, centres, np.array([r[4] for r in rows], float))


def test_hand_computed_cpm():
    annotations = _table([("a", 0, 0, 0, 10), ("a", 50, 0, 0, 6), ("b", 0, 0, 0, -1)])
    candidates = _table([
        ("a", 1, 0, 0, 0.9), ("a", 2, 0, 0, 0.8),  # both hit nodule 1: one hit, one duplicate (ignored)
        ("a", 100, 0, 0, 0.7),  # false positive
        ("b", 0, 0, 4.9, 0.6),  # hits the 10 mm default-diameter nodule (4.9 < 5)
        ("b", 30, 0, 0, 0.5),  # false positive
    ])
    result = evaluate_luna16(candidates, annotations, ["a", "b"])
    # Entries 0.9 hit, 0.7 FP, 0.6 hit, 0.5 FP over 2 scans and 3 nodules: corners (0,0) (0,1/3)
    # (0.5,1/3) (0.5,2/3) (1,2/3). The official grid reads 0.5 at 0.49985 (before the step): 1/3.
    expected = [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3]
    np.testing.assert_allclose([result.metrics[f"sensitivity_FPPI_{x:g}"] for x in (0.125, 0.25, 0.5, 1, 2, 4, 8)],
                               expected)
    assert result.metrics["CPM"] == pytest.approx(11 / 21)
    assert result.metrics["num_duplicate_hits_ignored"] == 1 and result.metrics["num_false_positives"] == 2


def test_hits_need_strictly_less_than_the_radius_and_excluded_findings_are_ignored():
    annotations = _table([("a", 0, 0, 0, 4)])
    excluded = _table([("a", 40, 0, 0, -1)])
    candidates = _table([("a", 2, 0, 0, 0.9), ("a", 44.9, 0, 0, 0.8), ("a", 60, 0, 0, 0.1)])
    result = evaluate_luna16(candidates, annotations, ["a"], excluded)
    # On the radius: no hit. The 0.8 mark lies on the excluded finding: neither hit nor false positive.
    assert result.metrics["num_nodules_hit"] == 0 and result.metrics["num_false_positives"] == 2
    result = evaluate_luna16(_table([("a", 1.99, 0, 0, 0.9)]), annotations, ["a"])
    assert result.metrics["CPM"] == 1.0


def test_at_most_max_marks_per_scan_ties_at_the_cut_drop_together():
    annotations = _table([("a", 0, 0, 0, 10)])
    candidates = _table([("a", 100, 0, 0, 0.9), ("a", 200, 0, 0, 0.5), ("a", 300, 0, 0, 0.5), ("a", 0, 0, 0, 0.5)])
    # With 2 marks the 3rd-highest probability (0.5) is the cut: only the 0.9 false positive stays.
    assert evaluate_luna16(candidates, annotations, ["a"], max_marks=2).metrics["num_nodules_hit"] == 0
    assert evaluate_luna16(candidates, annotations, ["a"], max_marks=4).metrics["num_nodules_hit"] == 1


def test_scans_without_rows_count_as_images_and_other_scans_are_not_used():
    annotations = _table([("a", 0, 0, 0, 10)])
    candidates = _table([("a", 0, 0, 0, 0.9), ("a", 50, 0, 0, 0.8), ("zzz", 0, 0, 0, 0.99)])
    one = evaluate_luna16(candidates, annotations, ["a"])
    eight = evaluate_luna16(candidates, annotations, ["a"] + [f"empty{i}" for i in range(7)])
    assert one.metrics["num_false_positives"] == 1 and eight.metrics["num_scans"] == 8
    # One FP over 8 scans is 1/8 FP per scan: all sensitivities are 1 in both cases.
    assert one.metrics["CPM"] == eight.metrics["CPM"] == 1.0


def test_no_nodules_gives_nan_and_grid_reading():
    assert np.isnan(evaluate_luna16(_table([("a", 0, 0, 0, 0.5)]), FindingTable.empty(), ["a"]).metrics["CPM"])
    # A straight line through the origin: the grid reads slightly left of 0.25, 0.5, 1, 2, 4.
    values = luna16_sensitivities(np.array([0.0, 8.0]), np.array([0.0, 1.0]))
    assert values[0] == pytest.approx(0.125 / 8) and values[-1] == 1.0
    assert values[3] < 1 / 8 and values[3] == pytest.approx(1 / 8, abs=1e-4)


def test_a_vertical_step_at_8_is_read_at_its_bottom_like_the_official_script():
    """7 scans, 82 false positives, the second of two nodules found after the 56th: the curve rises
    vertically at exactly 8 FPs per scan. The script's ``fpr * 82 / 7`` puts that step one float step
    right of 8 (``(56 / 82) * 82 / 7``), so its grid point 8.0 reads the bottom: all seven sensitivities
    are 1/2 and the official CPM is 0.5 (exact ratios would read 1 at 8: CPM 4/7)."""
    annotations = _table([("s0", 0, 0, 0, 10), ("s0", 100, 0, 0, 10)])
    false = [(f"s{i % 7}", 500 + 20 * i, 0, 0, 0.9 - 0.001 * i) for i in range(82)]
    marks = _table([("s0", 0, 0, 0, 1.0), ("s0", 100, 0, 0, 0.9 - 0.001 * 55.5)] + false)
    result = evaluate_luna16(marks, annotations, [f"s{i}" for i in range(7)])
    assert result.metrics["num_false_positives"] == 82 and result.metrics["num_nodules_hit"] == 2
    assert [result.metrics[f"sensitivity_FPPI_{x:g}"] for x in (0.125, 0.25, 0.5, 1, 2, 4, 8)] == [0.5] * 7
    assert result.metrics["CPM"] == 0.5
