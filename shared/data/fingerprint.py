"""The data set fingerprint: what preprocessing must know about the training split.

Median voxel spacing (per array axis) and, per channel, the modality and, for CT, the foreground
intensity statistics: the 0.5/99.5 percentiles and the mean and standard deviation of the foreground
clipped to them. Foreground is the voxels inside instance masks, or inside the boxes for a data set with
only boxes. Each case gives at most ``samples_per_case`` foreground voxels, drawn with a seeded
generator, so the numbers are reproducible and cost little memory. A training split with no object at
all falls back to every voxel (with a warning): there is then nothing better to describe the data.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import nibabel as nib
import numpy as np

from shared.boxes.convention import boxes_world_to_voxel
from shared.boxes.rasterize import rasterize_boxes
from shared.data.resample import spacing_of
from shared.data.validate import CheckedCase, channel_paths, validate_datalist
from shared.io.datalist import entry_boxes
from shared.io.errors import InputError
from shared.io.images import load_label_map, load_volume

MODALITIES = ("CT", "MRI")
PERCENTILES = (0.5, 99.5)


def channel_modalities(datalist: dict[str, Any], num_channels: int, *, source: str | None = None) -> list[str]:
    """Modality of each channel from the datalist's ``"modality"`` key (a string, a list, or a
    ``{"0": ...}`` mapping); absent means CT. "CT" (any case) is CT, anything else is z-scored per image
    and called "MRI".
    """
    value = datalist.get("modality", "CT")
    if isinstance(value, dict):
        value = [value[key] for key in sorted(value, key=int)]
    if isinstance(value, str):
        value = [value] * num_channels
    if len(value) != num_channels:
        raise InputError(source, f"'modality' names {len(value)} channels but the images have {num_channels}")
    return ["CT" if str(item).upper() == "CT" else "MRI" for item in value]


def compute_fingerprint(datalist_path: str | os.PathLike, *, samples_per_case: int = 10000,
                        seed: int = 0) -> dict[str, Any]:
    """Validate the training split of a datalist and fingerprint it (see the module docstring).

    Returns:
        ``{"median_spacing": [sx, sy, sz], "spacings": [[...] per case], "channels": [{"modality",
        "clip", "mean", "std"}], "num_cases": n, "foreground_voxels": sampled count}``.
    """
    datalist, cases = validate_datalist(datalist_path, ("training",))
    return fingerprint_cases(cases, datalist, samples_per_case=samples_per_case, seed=seed,
                             source=os.fspath(datalist_path))


def fingerprint_cases(cases: Sequence[CheckedCase], datalist: dict[str, Any], *, samples_per_case: int = 10000,
                      seed: int = 0, source: str | None = None) -> dict[str, Any]:
    """Fingerprint already validated training cases (``validate_datalist`` output)."""
    spacings = np.stack([spacing_of(case.affine) for case in cases])
    modalities = channel_modalities(datalist, len(channel_paths(cases[0].entry)), source=source)
    channels = [{"modality": modality, "clip": None, "mean": None, "std": None} for modality in modalities]
    ct = [index for index, modality in enumerate(modalities) if modality == "CT"]
    sampled = 0
    if ct:
        samples = _foreground_samples(cases, ct, samples_per_case, seed)
        sampled = samples.shape[1]
        for row, index in enumerate(ct):
            channels[index].update(_intensity_statistics(samples[row]))
    return {"median_spacing": np.median(spacings, axis=0).tolist(), "spacings": spacings.tolist(),
            "channels": channels, "num_cases": len(cases), "foreground_voxels": int(sampled)}


def _intensity_statistics(values: np.ndarray) -> dict[str, Any]:
    low, high = np.percentile(values, PERCENTILES)
    clipped = np.clip(values, low, high)
    return {"clip": [float(low), float(high)], "mean": float(clipped.mean()), "std": float(clipped.std())}


def _foreground_samples(cases: Sequence[CheckedCase], channels: list[int], per_case: int, seed: int) -> np.ndarray:
    """(len(channels), M) intensities at foreground voxels, ``per_case`` at most from each case."""
    rng = np.random.default_rng(seed)
    collected = []
    for case in cases:
        foreground = foreground_of(case)
        if not foreground.any():
            continue
        region = _bounding_region(foreground)
        flat = np.flatnonzero(foreground[region])
        if len(flat) > per_case:
            flat = np.sort(rng.choice(flat, size=per_case, replace=False))
        paths = channel_paths(case.entry)
        collected.append(np.stack([_read_region(paths[index], region).reshape(-1)[flat] for index in channels]))
    if not collected:
        warnings.warn("the training split holds no object: CT statistics come from all voxels", stacklevel=3)
        for case in cases:
            voxels = load_volume(channel_paths(case.entry)).array
            collected.append(voxels[channels].reshape(len(channels), -1)[:, :: max(1, voxels[0].size // per_case)])
    return np.concatenate(collected, axis=1).astype(np.float64)


def _bounding_region(foreground: np.ndarray) -> tuple[slice, slice, slice]:
    corners = np.argwhere(foreground)
    return tuple(slice(int(low), int(high) + 1) for low, high in zip(corners.min(0), corners.max(0)))


def _read_region(path: str, region: tuple[slice, slice, slice]) -> np.ndarray:
    """Voxels of one channel inside ``region``. NIfTI is sliced through nibabel's array proxy: the
    values MONAI's reader would give (it reads the same proxy), without reading or converting the whole
    scan, which is most of the fingerprint's time on realistic CT. Other formats are read whole."""
    if str(path).lower().endswith((".nii", ".nii.gz")):
        proxy = nib.load(path).dataobj
        return np.asarray(proxy[region + (0,) * (len(proxy.shape) - 3)], dtype=np.float32)
    return load_volume(path).array[0][region]


def foreground_of(case: CheckedCase) -> np.ndarray:
    """Boolean (X, Y, Z) foreground of a case: its instance mask, else its boxes painted."""
    if case.entry.get("mask"):
        return load_label_map(case.entry["mask"]) > 0
    boxes, _ = entry_boxes(case.entry)
    return rasterize_boxes(boxes_world_to_voxel(boxes, case.affine), case.shape, dtype=np.uint8) > 0
