"""Preprocessing a datalist into the cache (:mod:`shared.data.cache`), and a new scan for inference.

Order of work: validate every entry (nothing is written before the whole datalist passed), make or
reuse the plan (fingerprinting the training split), then per case: read, resample to the target
spacing, normalise, write. A case whose json carries the current plan hash and the digest of the same
datalist entry is skipped; a changed plan, or an edited entry, redoes it. The per-scan steps are :func:`preprocess_volume`, the same code
for training cases and for a new scan at inference.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from shared.boxes.convention import boxes_world_to_voxel
from shared.checkpoints.safe_load import sha256_file
from shared.data.cache import PLAN_FILE, cache_lock, case_is_current, entry_digest, read_plan, write_case
from shared.data.fingerprint import fingerprint_cases
from shared.data.normalize import normalize_image
from shared.data.plan import make_plan, spacing_request_matches
from shared.data.resample import (boxes_after_resampling, needs_resampling, resample_image, resample_instance_map,
                                  resampled_affine, resampled_shape, spacing_of, zoom_factors)
from shared.data.validate import CheckedCase, channel_paths, validate_datalist
from shared.io.atomic import write_json
from shared.io.datalist import entry_boxes
from shared.io.errors import InputError
from shared.io.images import Volume, load_label_map, load_volume


def preprocess(datalist_path: str | os.PathLike, cache_dir: str | os.PathLike, *,
               splits: Sequence[str] = ("training", "validation"), spacing: str | Sequence[float] = "fixed",
               num_workers: int = 0, overwrite: bool = False, progress: bool = True) -> list[str]:
    """Validate a datalist, make (or reuse) the plan and write every case of ``splits`` to the cache.

    Args:
        datalist_path: datalist JSON (:mod:`shared.io.datalist`).
        cache_dir: output folder, created if needed.
        splits: splits to preprocess; "training" must be non-empty (it defines the plan).
        spacing: "fixed" (1 mm isotropic), "median" (training median) or three mm values.
        num_workers: processes for the per-case work; 0 works in this process.
        overwrite: redo the plan and every case even if the cache is current.
        progress: show a tqdm progress bar.

    Returns:
        The case ids of ``splits``, in datalist order.

    Raises:
        InputError: for any invalid entry (a scan whose resampled grid would be empty or too large
            included), before anything is written.

    A second run into the same ``cache_dir`` waits until this one is done (:func:`shared.data.cache.cache_lock`).
    """
    datalist, cases = validate_datalist(datalist_path, tuple(dict.fromkeys(("training", *splits))))
    with cache_lock(cache_dir):
        plan = _plan_for(datalist_path, cache_dir, datalist, cases, spacing=spacing, overwrite=overwrite)
        wanted = [case for case in cases if case.split in splits]
        write_cases(wanted, plan, cache_dir, overwrite=overwrite, num_workers=num_workers, progress=progress)
    return [case.case for case in wanted]


def check_resampled_sizes(cases: Sequence[CheckedCase], target_spacing: Sequence[float]) -> None:
    """Raise :class:`InputError` naming the first scan whose grid at ``target_spacing`` would have an
    empty axis or more voxels than :data:`shared.data.resample.MAX_VOXELS` (an absurd spacing in its header)."""
    for case in cases:
        try:
            resampled_shape(case.shape, zoom_factors(spacing_of(case.affine), target_spacing))
        except ValueError as error:
            raise InputError(channel_paths(case.entry)[0], f"{error}; check the voxel spacing in its header "
                                                           "and the target spacing") from None


def write_cases(cases: Sequence[CheckedCase], plan: dict[str, Any], cache_dir: str | os.PathLike, *,
                overwrite: bool = False, num_workers: int = 0, progress: bool = True) -> None:
    """Preprocess the cases whose cache entry is missing or stale (another plan or datalist entry)."""
    todo = [case for case in cases if overwrite or not case_is_current(
        cache_dir, case.case, plan["hash"], split=case.split, entry=case.entry)]
    jobs = [(case, plan, os.fspath(cache_dir)) for case in todo]
    bar = dict(total=len(jobs), desc="preprocessing", unit="case", disable=not progress)
    if num_workers > 0 and len(jobs) > 1:
        # workers share few cores: one thread each avoids oversubscription (never set in this process,
        # whose training would then run on one thread)
        with ProcessPoolExecutor(max_workers=num_workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            list(tqdm(pool.map(_process_case, jobs), **bar))
    else:
        for job in tqdm(jobs, **bar):
            _process_case(job)


def preprocess_volume(volume: Volume, plan: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Resample a scan to the plan's spacing and normalise it: the per-scan steps, for any scan.

    Args:
        volume: a scan from :func:`shared.io.images.load_volume`.
        plan: the cache's plan.

    Returns:
        ``(array, affine)``: (C, X', Y', Z') float32 C-contiguous, and its (4, 4) RAS affine.
    """
    factors = zoom_factors(spacing_of(volume.affine), plan["target_spacing"])
    array, affine = volume.array, volume.affine
    _warn_if_constant(volume)
    if needs_resampling(spacing_of(volume.affine), plan["target_spacing"]):
        try:
            resampled_shape(array.shape[1:], factors)  # checked before the (possibly huge) allocation
        except ValueError as error:
            raise InputError(volume.sources[0], f"{error}; check the voxel spacing in its header") from None
        array, affine = resample_image(array, factors), resampled_affine(affine, factors)
    # a resampled array is ours to overwrite; the caller's volume is not
    return normalize_image(array, plan["channels"], in_place=array is not volume.array), affine


def _warn_if_constant(volume: Volume) -> None:
    """A scan of one value normalises to all zeros: usually an export or windowing error, so say so."""
    for index, channel in enumerate(volume.array):
        source = volume.sources[min(index, len(volume.sources) - 1)] if volume.sources else "a scan"
        if channel.size and channel.min() == channel.max():
            warnings.warn(f"{source}: every voxel is {float(channel.flat[0]):g}; the preprocessed image will be "
                          "constant (check the export)", stacklevel=3)


def preprocess_case(case: CheckedCase, plan: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None]:
    """One validated case → ``(record, image (C, X, Y, Z), mask (X, Y, Z) int16 or None)`` for the cache."""
    volume = load_volume(channel_paths(case.entry))
    original_shape, original_affine = volume.array.shape[1:], volume.affine
    resampling = needs_resampling(spacing_of(original_affine), plan["target_spacing"])
    factors = zoom_factors(spacing_of(original_affine), plan["target_spacing"]) if resampling else np.ones(3)
    image, affine = preprocess_volume(volume, plan)
    del volume
    world, labels = entry_boxes(case.entry)
    boxes = boxes_world_to_voxel(world, original_affine)
    mask = None
    if case.entry.get("mask"):
        mask = load_label_map(case.entry["mask"])
        mask = resample_instance_map(mask, factors) if resampling else mask.astype(np.int16)
    if resampling or mask is not None:
        boxes = boxes_after_resampling(boxes, factors, mask=mask, instances=case.instances)
    record = {"case": case.case, "split": case.split, "image": case.entry["image"],
              "mask": case.entry.get("mask") or None, "boxes": np.asarray(boxes, dtype=np.float64).round(4),
              "labels": labels, "instances": case.instances, "shape": list(image.shape[1:]), "affine": affine,
              "original_affine": original_affine, "original_shape": list(original_shape),
              "plan_hash": plan["hash"], "entry_sha256": entry_digest(case.entry)}
    return record, image, mask


def _process_case(job: tuple[CheckedCase, dict[str, Any], str]) -> str:
    case, plan, cache_dir = job
    record, image, mask = preprocess_case(case, plan)
    write_case(cache_dir, record, image, mask)
    return case.case


def _plan_for(datalist_path, cache_dir, datalist, cases, *, spacing, overwrite) -> dict[str, Any]:
    """Reuse the cache's plan when it was made from this very datalist file with this spacing request."""
    existing = None if overwrite else read_plan(cache_dir)
    if (existing is not None and existing.get("datalist_sha256") == sha256_file(datalist_path)
            and spacing_request_matches(existing, spacing)):
        check_resampled_sizes(cases, existing["target_spacing"])
        return existing
    training = [case for case in cases if case.split == "training"]
    fingerprint = fingerprint_cases(training, datalist, source=os.fspath(datalist_path))
    plan = make_plan(fingerprint, datalist, datalist_path, spacing=spacing)
    check_resampled_sizes(cases, plan["target_spacing"])
    write_json(Path(cache_dir) / PLAN_FILE, plan)
    return plan
