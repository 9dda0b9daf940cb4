from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shared.metrics.matching import match_detections
from shared.metrics.records import MatchRecord, concatenate_records


def _record(case, indices):
    pick = lambda key: [case[key][i] for i in indices]  # noqa: E731
    return match_detections(
        pick("pred_boxes"), pick("pred_labels"), pick("pred_scores"), pick("gt_boxes"), pick("gt_labels"),
        pick("gt_ignore"), num_classes=2, iou_thresholds=[0.1, 0.5],
    )


def _assert_equal(first: MatchRecord, second: MatchRecord) -> None:
    for field in dataclasses.fields(MatchRecord):
        np.testing.assert_array_equal(getattr(first, field.name), getattr(second, field.name), err_msg=field.name)


def test_concatenate_equals_matching_everything_at_once(random_case, rng):
    case = random_case(rng, classes=2, images=6, ignore_rate=0.2)
    whole = _record(case, range(6))
    _assert_equal(concatenate_records([_record(case, range(3)), _record(case, range(3, 6))]), whole)


def test_select_images_reorders_like_matching_reordered_images(random_case, rng):
    case = random_case(rng, classes=2, images=5)
    order = [3, 0, 4, 1, 2]
    _assert_equal(_record(case, range(5)).select_images(order), _record(case, order))


def test_save_load_round_trip(random_case, rng, tmp_path):
    record = _record(random_case(rng, classes=2, images=4), range(4))
    record.save(tmp_path / "r.npz", image_ids=np.array(["a", "b", "c", "d"]))
    loaded, extra = MatchRecord.load(tmp_path / "r.npz")
    _assert_equal(loaded, record)
    assert list(extra["image_ids"]) == ["a", "b", "c", "d"]


def test_threshold_lookup_and_mismatched_concatenation(random_case, rng):
    case = random_case(rng, classes=2, images=2)
    record = _record(case, range(2))
    assert record.threshold_index(0.5) == 1
    with pytest.raises(KeyError, match="0.10, 0.50"):
        record.threshold_index(0.3)
    other = match_detections([np.zeros((0, 6))], [[]], [[]], [np.zeros((0, 6))], [[]], num_classes=2)
    with pytest.raises(ValueError, match="differ"):
        concatenate_records([record, other])


def test_threshold_lookup_prefers_the_exact_value():
    above = float(np.linspace(0.1, 0.5, 9)[4])  # the IoU range's 0.30000000000000004
    assert above != 0.3
    record = match_detections([np.zeros((0, 6))], [[]], [[]], [np.zeros((0, 6))], [[]], num_classes=1,
                              iou_thresholds=[0.3, above])
    assert record.threshold_index(0.3) == 0 and record.threshold_index(above) == 1
    only_range = match_detections([np.zeros((0, 6))], [[]], [[]], [np.zeros((0, 6))], [[]], num_classes=1,
                                  iou_thresholds=[above])
    assert only_range.threshold_index(0.3) == 0  # a key's rounded 0.30 still finds the range's value
