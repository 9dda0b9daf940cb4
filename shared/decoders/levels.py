"""Reading an encoder's ``feature_info``: channels, cumulative strides and the ratio between levels."""

from __future__ import annotations

from collections.abc import Sequence


def read_levels(feature_info: Sequence[dict]) -> tuple[list[int], list[int], list[int]]:
    """Checks ``feature_info`` and returns channels, cumulative strides and level-to-level ratios.

    Args:
        feature_info: ``[{"channels": c, "stride": s}, ...]`` fine → coarse.

    Returns:
        ``(channels, strides, ratios)`` with ``ratios[l] = strides[l + 1] // strides[l]``
        (one fewer entry than levels).

    Raises:
        ValueError: empty, missing keys, or strides that do not grow by integer factors.
    """
    if not feature_info:
        raise ValueError("feature_info is empty: a decoder needs at least one encoder level")
    try:
        channels = [int(level["channels"]) for level in feature_info]
        strides = [int(level["stride"]) for level in feature_info]
    except (KeyError, TypeError) as error:
        raise ValueError(f"feature_info entries need 'channels' and 'stride', got {list(feature_info)}") from error
    ratios = []
    for finer, coarser in zip(strides, strides[1:]):
        if coarser % finer:
            raise ValueError(f"feature_info strides must grow by integer factors, got {strides}")
        ratios.append(coarser // finer)
    return channels, strides, ratios
