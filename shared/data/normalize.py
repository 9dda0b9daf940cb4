"""Intensity normalisation, the one place it is done.

CT channels are clipped to the data set's foreground 0.5/99.5 percentiles and z-scored with the data
set's foreground mean and standard deviation (all four numbers come from the plan, so every scan of a
data set is mapped the same way and Hounsfield units keep their meaning). Every other modality ("MRI")
is z-scored per image: MRI intensities have no absolute scale, so only the scan itself can say what is
bright. When a scan has a clear background of exact zeros (at least :data:`BACKGROUND_FRACTION` of its
voxels, as in skull-stripped or masked MRI) the statistics are taken over the nonzero voxels only and
the background stays 0; otherwise over all voxels.

A channel spec with ``"per_image": true`` is z-scored per image whatever its modality: pre-training
(paper, section 4: "z-scored inputs") has no labels, so no foreground statistics for CT exist.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: Fraction of exact zeros above which an MRI channel counts as having a background to leave out.
BACKGROUND_FRACTION = 0.25
_EPSILON = 1e-8


def normalize_ct(channel: np.ndarray, *, clip: Sequence[float], mean: float, std: float,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Clip to ``clip`` then z-score with the data set's ``mean`` and ``std``.

    Args:
        channel: one channel (X, Y, Z), any float dtype.
        clip: ``[low, high]`` foreground 0.5/99.5 percentiles of the data set.
        mean: mean of the clipped foreground of the data set.
        std: standard deviation of the clipped foreground of the data set.
        out: where to write (may be ``channel`` itself, to save memory).

    Returns:
        The normalised channel (X, Y, Z) float32.
    """
    out = _output(channel, out)
    np.clip(channel, clip[0], clip[1], out=out)
    out -= np.float32(mean)
    out *= np.float32(1.0 / max(float(std), _EPSILON))
    return out


def normalize_mri(channel: np.ndarray, *, out: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Z-score one channel with its own statistics (nonzero voxels only when there is a background).

    Returns:
        ``(normalised (X, Y, Z) float32, used_nonzero)``; ``used_nonzero`` says which voxels gave the
        statistics.
    """
    nonzero = channel != 0
    used_nonzero = (1.0 - nonzero.mean()) >= BACKGROUND_FRACTION and nonzero.any()
    values = channel[nonzero] if used_nonzero else channel
    mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
    out = _output(channel, out)
    np.subtract(channel, np.float32(mean), out=out)
    out *= np.float32(1.0 / max(std, _EPSILON))
    if used_nonzero:
        out[~nonzero] = 0.0
    return out, bool(used_nonzero)


def normalize_image(array: np.ndarray, channels: Sequence[dict[str, Any]], *, in_place: bool = False) -> np.ndarray:
    """Normalise every channel of a scan as the plan's channel list says.

    Args:
        array: (C, X, Y, Z) float32 scan.
        channels: the plan's ``channels``: one ``{"modality", "clip", "mean", "std"}`` per channel,
            optionally with ``"per_image": true`` (z-score with the scan's own statistics).
        in_place: overwrite ``array`` instead of allocating a new one.

    Returns:
        (C, X, Y, Z) float32 normalised scan.
    """
    if array.ndim != 4 or array.shape[0] != len(channels):
        raise ValueError(f"expected (C, X, Y, Z) with C = {len(channels)} channels, got shape {array.shape}")
    out = array if in_place and array.dtype == np.float32 else np.empty(array.shape, dtype=np.float32)
    for index, spec in enumerate(channels):
        if spec["modality"] == "CT" and not spec.get("per_image", False):
            normalize_ct(array[index], clip=spec["clip"], mean=spec["mean"], std=spec["std"], out=out[index])
        else:
            normalize_mri(array[index], out=out[index])
    return out


def _output(channel: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.empty(channel.shape, dtype=np.float32)
    return out
