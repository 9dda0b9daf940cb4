"""Holding out a validation split, reproducibly, when a foreign data set has only a training list."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def split_validation(entries: Sequence[dict[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    """Split entries into ``(training, validation)``: ``round(fraction * n)`` drawn with ``seed`` (at
    least one when ``fraction > 0`` and there are two or more entries); both keep the input order."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {fraction}")
    count = int(round(fraction * len(entries)))
    if fraction > 0 and len(entries) > 1:
        count = min(max(count, 1), len(entries) - 1)
    held_out = set(np.random.default_rng(seed).permutation(len(entries))[:count].tolist())
    training = [entry for index, entry in enumerate(entries) if index not in held_out]
    validation = [entry for index, entry in enumerate(entries) if index in held_out]
    return training, validation
