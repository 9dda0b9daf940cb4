"""Options of the evaluation functions, read as fire passes them and checked with one clear error each.

Fire hands a list option over as a scalar, a string with commas, a tuple or a list; a bad value (a
word where a number belongs, an IoU above 1, a negative draw count) must fail at once, naming the
option, instead of as a numpy traceback after the matching.
"""

from __future__ import annotations

import math
from typing import Any

from shared.metrics.errors import EvaluationInputError

__all__ = ["as_list", "iou_thresholds", "iou_range", "iou_threshold", "count"]


def as_list(value: Any, kind: type, name: str) -> list | None:
    """``value`` (a scalar, a string with commas, a tuple or a list) as a list of ``kind``; ``None`` stays.

    Raises:
        EvaluationInputError: naming ``--<name>`` when an item is not a ``kind``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.strip("[]()").split(",") if part.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    items = []
    for item in value:
        try:
            items.append(kind(item))
        except (TypeError, ValueError):
            what = "a number" if kind in (int, float) else f"a {kind.__name__}"
            raise EvaluationInputError(f"--{name}: {item!r} is not {what}.") from None
    return items


def iou_threshold(value: Any, name: str) -> float:
    """One IoU threshold in (0, 1]."""
    (threshold,) = as_list([value], float, name)
    if not 0.0 < threshold <= 1.0 or math.isnan(threshold):
        raise EvaluationInputError(f"--{name}: {threshold} is not an IoU threshold in (0, 1].")
    return threshold


def iou_thresholds(value: Any, name: str) -> list[float]:
    """A list of IoU thresholds, each in (0, 1]."""
    return [iou_threshold(threshold, name) for threshold in as_list(value, float, name)]


def iou_range(value: Any, name: str = "iou_range") -> tuple[float, float, float]:
    """``start,stop,step`` of mAP/mAR with ``0 < start <= stop <= 1`` and ``step > 0``."""
    values = as_list(value, float, name)
    if len(values) != 3:
        raise EvaluationInputError(f"--{name}: needs start,stop,step (3 numbers), got {len(values)}: {values}.")
    start, stop, step = values
    if not (0.0 < start <= stop <= 1.0 and step > 0.0):
        raise EvaluationInputError(f"--{name}: needs 0 < start <= stop <= 1 and step > 0, got {values}.")
    return start, stop, step


def count(value: Any, name: str, minimum: int) -> int:
    """A whole number of at least ``minimum`` (a draw count, a cap)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer() or number < minimum:
        raise EvaluationInputError(f"--{name}: must be a whole number of at least {minimum}, got {value!r}.")
    return int(number)
