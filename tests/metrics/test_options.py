from __future__ import annotations

import pytest

from shared.metrics import options
from shared.metrics.errors import EvaluationInputError


def test_lists_come_as_fire_passes_them():
    for value in ("0.1,0.5", "[0.1, 0.5]", (0.1, 0.5), [0.1, 0.5]):
        assert options.as_list(value, float, "x") == [0.1, 0.5]
    assert options.as_list(0.3, float, "x") == [0.3] and options.as_list(None, float, "x") is None
    assert options.iou_range("0.1,0.5,0.05") == (0.1, 0.5, 0.05)
    assert options.count("3", "draws", 1) == 3 and options.count(0, "bootstrap", 0) == 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda: options.as_list("a,b", float, "iou_thresholds"), r"--iou_thresholds: 'a' is not a number"),
    (lambda: options.iou_threshold(float("nan"), "froc_iou"), r"--froc_iou: nan is not an IoU threshold"),
    (lambda: options.iou_thresholds([0.5, -0.1], "iou_thresholds"), r"-0.1 is not an IoU threshold in \(0, 1\]"),
    (lambda: options.iou_range((0.1, 0.5, 0.0)), r"--iou_range: needs 0 < start <= stop <= 1 and step > 0"),
    (lambda: options.count(2.5, "draws", 1), r"--draws: must be a whole number of at least 1, got 2.5"),
    (lambda: options.count(True, "draws", 1), r"--draws: must be a whole number"),
    (lambda: options.count("many", "draws", 1), r"--draws: must be a whole number"),
])
def test_bad_values_name_the_option(call, message):
    with pytest.raises(EvaluationInputError, match=message):
        call()
