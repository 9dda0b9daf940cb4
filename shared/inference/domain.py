"""Is a scan like the ones the model was trained on? The training domain's fingerprint and the check.

A detector answers on any scan: a lung model given a head CT still returns boxes with high scores.
So training records, in ``model_plan.json`` under ``"domain"``, what its training scans looked like
(:func:`fingerprint_training_scans`), and inference compares each scan with it before the scan is
resampled or normalised (:func:`check_scan`, or the transform :class:`CheckTrainingDomaind` in a
bundle's inference chain). A scan far outside gets one warning line in the log and a ``"warnings"``
list in its prediction entry; nothing is refused (a wrong channel count is, as before).

What is compared, per scan, on a strided subsample of at most :data:`MAX_SAMPLED_VOXELS` voxels of
every channel (no mask is needed, so the training and the new scans are summarised the same way):

* intensity: the :data:`CHECKED_PERCENTILES` (5th, 50th, 95th) of every channel. A CT channel is
  compared in Hounsfield units; an MRI channel, whose scale is arbitrary (each scan is z-scored), by
  its shape only: ``(q - q50) / (q95 - q5)``. Far: outside the training scans' range of that
  percentile widened on both sides by ``margin`` (default :data:`INTENSITY_MARGIN`) times the
  training intensity scale (the median of the training scans' ``q95 - q5``; 1 for MRI).
* spacing and extent (the physical size, voxels × spacing, in mm) per array axis: far when outside
  ``[training minimum / factor, training maximum × factor]``, ``factor`` :data:`GEOMETRY_FACTOR`.

The 0.5th and 99.5th percentiles, mean and standard deviation are recorded too but not checked: the
tails move with a metal implant or a contrast bolus, which is no reason to distrust a scan.

The fingerprint reads at most ``max_scans`` (:data:`MAX_FINGERPRINT_SCANS`) training scans, evenly
spread over the split, for the intensities: all of them in a data set of usual size, because the ranges
are minima and maxima over scans, and a subset misses the rarer scans (on the embedded lung data, 16 of
96 training scans set a median range that 8 of its 128 scans fall outside; all 96, none). Spacing and
extent come from every training scan's header. It is computed once per datalist and kept next to the
cache's ``plans.json`` (:func:`fingerprint_datalist`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Hashable

import nibabel as nib
import numpy as np

from shared.checkpoints.safe_load import sha256_file
from shared.data.resample import spacing_of
from shared.data.validate import CheckedCase, channel_paths, validate_datalist
from shared.io.atomic import write_json
from shared.io.errors import InputError
from shared.io.images import load_volume

logger = logging.getLogger(__name__)

PERCENTILES = (0.5, 5.0, 50.0, 95.0, 99.5)
CHECKED_PERCENTILES = (5.0, 50.0, 95.0)
INTENSITY_MARGIN = 0.25  # × the training intensity scale, on each side of the training range
GEOMETRY_FACTOR = 2.0  # spacing and extent: [training min / 2, training max × 2]
MAX_SAMPLED_VOXELS = 1 << 18  # per scan and channel: the percentiles stay within a few HU of the whole scan's
MAX_FINGERPRINT_SCANS = 128
FINGERPRINT_VERSION = 1
DOMAIN_FILE = "domain.json"


def sampling_step(shape: Sequence[int], max_voxels: int = MAX_SAMPLED_VOXELS) -> int:
    """The stride, the same on every axis, that leaves at most about ``max_voxels`` of a grid ``shape``."""
    return max(1, math.ceil((float(np.prod(shape)) / max_voxels) ** (1 / 3)))


def channel_statistics(values: np.ndarray, modality: str) -> dict[str, Any]:
    """The intensity summary of one channel's sampled voxels.

    Args:
        values: the channel's voxels, any shape.
        modality: "CT" (compared in HU) or anything else (MRI: compared by shape, see the module docstring).

    Returns:
        ``{"percentiles": [q0.5, q5, q50, q95, q99.5], "compared": the values the check uses, one per
        :data:`CHECKED_PERCENTILES`, "scale": q95 - q5, "mean", "std"}``.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    quantiles = np.percentile(values, PERCENTILES)
    by_percentile = dict(zip(PERCENTILES, quantiles))
    scale = float(by_percentile[95.0] - by_percentile[5.0])
    checked = np.array([by_percentile[p] for p in CHECKED_PERCENTILES])
    if modality != "CT":
        checked = (checked - by_percentile[50.0]) / max(scale, 1e-6)
    return {"percentiles": quantiles.tolist(), "compared": checked.tolist(), "scale": scale,
            "mean": float(values.mean()), "std": float(values.std())}


def summarize_scan(array: np.ndarray, affine: np.ndarray, modalities: Sequence[str]) -> dict[str, Any]:
    """What the check compares of one scan, from a strided subsample of its voxels.

    Args:
        array: the scan as read, before resampling and normalisation.
        affine: its (4, 4) voxel → RAS mm matrix.
        modalities: one per channel ("CT" or "MRI").

    Returns:
        ``{"spacing": [3] mm, "extent_mm": [3], "channels": [channel_statistics per channel]}``.

    Shape:
        array: (C, X, Y, Z).
    """
    array = np.asarray(array)
    step = sampling_step(array.shape[1:])
    spacing = spacing_of(affine)
    return {"spacing": spacing.tolist(), "extent_mm": (np.array(array.shape[1:]) * spacing).tolist(),
            "channels": [channel_statistics(channel[::step, ::step, ::step], modality)
                         for channel, modality in zip(array, modalities)]}


def fingerprint_training_scans(cases: Sequence[CheckedCase], modalities: Sequence[str], *,
                               max_scans: int = MAX_FINGERPRINT_SCANS) -> dict[str, Any]:
    """The training domain's fingerprint, recorded in ``model_plan.json`` as ``"domain"``.

    Args:
        cases: the validated training cases (:func:`shared.data.validate.validate_datalist`).
        modalities: one per channel, as the data set's plan names them.
        max_scans: at most this many scans are read for the intensities, evenly spread over ``cases``.

    Returns:
        ``{"version", "num_scans", "intensity_scans", "spacing": {"min", "max"}, "extent_mm": {"min",
        "max"}, "channels": [{"modality", "percentiles": [[min, max] per PERCENTILES], "compared":
        [[min, max] per CHECKED_PERCENTILES], "scale", "mean": [min, max], "std": [min, max]}]}``.
    """
    spacings = np.stack([spacing_of(case.affine) for case in cases])
    extents = np.stack([np.array(case.shape) * spacing for case, spacing in zip(cases, spacings)])
    picked = sorted(set(np.linspace(0, len(cases) - 1, min(len(cases), max_scans)).round().astype(int).tolist()))
    per_scan = [[channel_statistics(values, modality) for values, modality in zip(_sampled_channels(cases[i]),
                                                                                   modalities)] for i in picked]
    channels = []
    for index, modality in enumerate(modalities):
        statistics = [scan[index] for scan in per_scan]
        channels.append({
            "modality": modality,
            "percentiles": _ranges([s["percentiles"] for s in statistics]),
            "compared": _ranges([s["compared"] for s in statistics]),
            "scale": float(np.median([s["scale"] for s in statistics])) if modality == "CT" else 1.0,
            "mean": _ranges([[s["mean"]] for s in statistics])[0],
            "std": _ranges([[s["std"]] for s in statistics])[0],
        })
    return {"version": FINGERPRINT_VERSION, "num_scans": len(cases), "intensity_scans": len(picked),
            "percentiles": list(PERCENTILES), "checked_percentiles": list(CHECKED_PERCENTILES),
            "spacing": {"min": spacings.min(0).tolist(), "max": spacings.max(0).tolist()},
            "extent_mm": {"min": extents.min(0).tolist(), "max": extents.max(0).tolist()},
            "channels": channels}


def fingerprint_datalist(datalist: str | os.PathLike, modalities: Sequence[str], *,
                         max_scans: int = MAX_FINGERPRINT_SCANS,
                         cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """:func:`fingerprint_training_scans` of a datalist's training split (validated first).

    With ``cache_dir`` the fingerprint is kept in ``cache_dir/domain.json`` and reused while the
    datalist file, the modalities and ``max_scans`` are unchanged (as ``plans.json`` is), so a second
    training on the same data reads no scan for it.
    """
    key = {"datalist_sha256": sha256_file(datalist), "modalities": list(modalities), "max_scans": int(max_scans),
           "version": FINGERPRINT_VERSION}
    stored_path = Path(cache_dir) / DOMAIN_FILE if cache_dir is not None else None
    if stored_path is not None and stored_path.is_file():
        stored = json.loads(stored_path.read_text())
        if stored.get("key") == key:
            return stored["fingerprint"]
    _, cases = validate_datalist(datalist, ("training",))
    fingerprint = fingerprint_training_scans(cases, modalities, max_scans=max_scans)
    if stored_path is not None:
        write_json(stored_path, {"key": key, "fingerprint": fingerprint})
    return fingerprint


def _ranges(rows: Sequence[Sequence[float]]) -> list[list[float]]:
    """Per column of ``rows`` (one row per scan) its [min, max]."""
    table = np.asarray(rows, dtype=np.float64)
    return np.stack([table.min(0), table.max(0)], axis=1).tolist()


def _sampled_channels(case: CheckedCase) -> list[np.ndarray]:
    """Each channel of a training scan, strided as :func:`summarize_scan` strides a scan at inference.
    NIfTI is sliced through nibabel's proxy (no float copy of the whole scan); other formats are read whole."""
    step = sampling_step(case.shape)
    sampled = []
    for path in channel_paths(case.entry):
        if str(path).lower().endswith((".nii", ".nii.gz")):
            proxy = nib.load(path).dataobj
            region = (slice(None, None, step),) * 3 + (0,) * (len(proxy.shape) - 3)
            sampled.append(np.asarray(proxy[region], dtype=np.float32))
        else:
            sampled.append(load_volume(path).array[0][::step, ::step, ::step])
    return sampled


def domain_problems(summary: Mapping[str, Any], fingerprint: Mapping[str, Any], *,
                    margin: float = INTENSITY_MARGIN, geometry_factor: float = GEOMETRY_FACTOR) -> list[str]:
    """What is far outside the training domain in a scan's summary, one sentence each (empty: nothing).

    Args:
        summary: :func:`summarize_scan` of the scan.
        fingerprint: :func:`fingerprint_training_scans` of the training scans.
        margin: widening of each intensity range, on each side, in units of the training intensity scale.
        geometry_factor: a spacing or extent is far outside below ``min / factor`` or above ``max × factor``.
    """
    problems = []
    for name, unit in (("spacing", "mm"), ("extent_mm", "mm")):
        low = np.asarray(fingerprint[name]["min"]) / geometry_factor
        high = np.asarray(fingerprint[name]["max"]) * geometry_factor
        value = np.asarray(summary[name])
        if np.any(value < low) or np.any(value > high):
            problems.append(f"{name.replace('_mm', '')} {_numbers(value)} {unit} outside the training's "
                            f"{_numbers(low)}..{_numbers(high)} (its range widened {geometry_factor:g}×)")
    for index, (scan, trained) in enumerate(zip(summary["channels"], fingerprint["channels"])):
        widening = margin * trained["scale"]
        relative = trained["modality"] != "CT"
        for percentile, value, (low, high) in zip(CHECKED_PERCENTILES, scan["compared"], trained["compared"]):
            if low - widening <= value <= high + widening:
                continue
            what = f"(q{percentile:g} - q50) / (q95 - q5)" if relative else f"{percentile:g}th percentile"
            problems.append(f"channel {index} ({trained['modality']}) {what} {value:.4g} outside the training's "
                            f"[{low:.4g}, {high:.4g}] ± {widening:.3g}")
    return problems


def _numbers(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in np.asarray(values, dtype=np.float64)) + "]"


def check_scan(array: np.ndarray, affine: np.ndarray, fingerprint: Mapping[str, Any] | None, *,
               source: str | None = None, margin: float = INTENSITY_MARGIN,
               geometry_factor: float = GEOMETRY_FACTOR) -> list[str]:
    """Compare a scan as read with the training domain; log one warning line when it is far outside.

    Args:
        array: the scan before resampling and normalisation.
        affine: its (4, 4) voxel → RAS mm matrix.
        fingerprint: the model plan's ``"domain"``; None checks nothing.
        source: the scan's file, named in the log line.
        margin, geometry_factor: see :func:`domain_problems`.

    Returns:
        The problems (:func:`domain_problems`), empty when the scan looks like the training scans.

    Raises:
        InputError: naming ``source``, when the scan's channel count is not the training's.

    Shape:
        array: (C, X, Y, Z).
    """
    if fingerprint is None:
        return []
    trained = fingerprint["channels"]
    if len(array) != len(trained):
        raise InputError(source, f"the model expects {len(trained)} channel(s), the scan has {len(array)}")
    summary = summarize_scan(array, affine, [channel["modality"] for channel in trained])
    problems = domain_problems(summary, fingerprint, margin=margin, geometry_factor=geometry_factor)
    if problems:
        logger.warning("%s: unlike the model's training scans, its boxes may mean nothing: %s", source or "a scan",
                       "; ".join(problems))
    return problems


class CheckTrainingDomaind:
    """Inference-chain transform: compare the loaded scan with the training domain (:func:`check_scan`).

    Put it right after the reader (``LoadVolumed``), before resampling and normalisation. It leaves
    the image as it is and writes only ``warnings_key`` (the problems, empty when the scan looks like
    the training scans), which :class:`shared.engines.inference.PredictionWriter` writes as the scan's
    ``"warnings"``. Because it does not change the image, its ``keys`` name only what it writes: the
    training's record of the image preprocessing
    (:func:`shared.engines.detection_setup.check_inference_preprocessing`) does not list it.

    Args:
        fingerprint: the model plan's ``"domain"``; None (a model trained before it was recorded)
            checks nothing, said once in the log.
        image_key, affine_key, sources_key: where the scan, its affine and its files are.
        warnings_key: where the problems go.
        margin, geometry_factor: see :func:`domain_problems`.
    """

    def __init__(self, fingerprint: Mapping[str, Any] | None, *, image_key: str = "image",
                 affine_key: str = "affine", sources_key: str = "sources", warnings_key: str = "domain_warnings",
                 margin: float = INTENSITY_MARGIN, geometry_factor: float = GEOMETRY_FACTOR):
        self.fingerprint = fingerprint
        self.image_key, self.affine_key, self.sources_key = image_key, affine_key, sources_key
        self.keys = (warnings_key,)
        self.margin, self.geometry_factor = margin, geometry_factor
        if fingerprint is None:
            logger.info("the model plan records no training-domain fingerprint (trained before it existed): "
                        "scans are not compared with the training scans")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        data = dict(data)
        if self.fingerprint is None:
            return data
        sources = data.get(self.sources_key) or [None]
        source = sources if isinstance(sources, str) else sources[0]
        data[self.keys[0]] = check_scan(np.asarray(data[self.image_key]), np.asarray(data[self.affine_key]),
                                        self.fingerprint, source=source, margin=self.margin,
                                        geometry_factor=self.geometry_factor)
        return data
