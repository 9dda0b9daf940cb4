"""Preprocessing a datalist into the cache (:mod:`shared.data.cache`), and a new scan for inference.

What a case becomes is the bundle's ``preprocessing`` transform chain (load, resample to the plan's
spacing, normalise with the plan's statistics, boxes world → voxel: :mod:`shared.data.transforms_io`,
:mod:`shared.data.transforms_geometry`, :mod:`shared.data.transforms_intensity`, plus any MONAI
transform a config adds). The chain's key (:func:`shared.data.cache_key.cache_key`) names the folder the
cases are written to, so an edited chain writes a new folder and never reads a stale one.

Order of work: validate every entry (nothing is written before the whole datalist passed), then per
case: run the chain, write. A case whose json carries the folder's key and the digest of the same
datalist entry is skipped; an edited entry redoes it. Under ``torchrun`` rank 0 preprocesses while the
other ranks wait at a barrier.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from shared.data.cache import (DESCRIPTION_FILE, cache_lock, case_is_current, entry_digest, rank_zero_first,
                               read_description, write_case)
from shared.data.cache_key import cache_description
from shared.data.resample import resampled_shape, spacing_of, zoom_factors
from shared.data.transforms_geometry import ResampleToSpacingd
from shared.data.transforms_intensity import NormalizeChannelsd
from shared.data.validate import CheckedCase, channel_paths, validate_datalist
from shared.io.atomic import write_json
from shared.io.datalist import entry_boxes
from shared.io.errors import InputError
from shared.io.images import Volume

Transform = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class PreprocessedCases:
    """Where a preprocessing run put its cases.

    Attributes:
        cache_dir: the keyed folder holding the cases (``cache_root/<key>``).
        key: the chain's key.
        cases: case ids per split, in datalist order.
    """

    cache_dir: str
    key: str
    cases: dict[str, list[str]]


def preprocess(datalist_path: str | os.PathLike, cache_root: str | os.PathLike, transform: Transform, *,
               splits: Sequence[str] = ("training", "validation"), num_workers: int = 0, overwrite: bool = False,
               progress: bool = True) -> PreprocessedCases:
    """Validate a datalist and write every case of ``splits``, run through ``transform``, to the cache.

    Args:
        datalist_path: datalist JSON (:mod:`shared.io.datalist`).
        cache_root: the cache root; the cases go to ``cache_root/<key of transform>``.
        transform: the preprocessing chain: a datalist entry ``{"image": path(s), "mask": path or None,
            "boxes": (N, 6) world cccwhd mm, "labels", "instances", "case", "split"}`` → ``{"image":
            (C, X, Y, Z), "affine": (4, 4), "boxes": (N, 6) xyzxyz voxel, "labels", "mask" or None, ...}``.
        splits: splits to preprocess.
        num_workers: processes for the per-case work; 0 works in this process.
        overwrite: redo every case even if it is current.
        progress: show a tqdm progress bar.

    Raises:
        InputError: for any invalid entry, before anything is written.

    A second run into the same folder waits until this one is done (:func:`shared.data.cache.cache_lock`).
    """
    _, cases = validate_datalist(datalist_path, tuple(splits))
    cached = preprocess_cases(cases, cache_root, transform, num_workers=num_workers, overwrite=overwrite,
                              progress=progress)
    cached.cases = {split: [case.case for case in cases if case.split == split] for split in splits}
    return cached


def preprocess_datalist(datalist_path: str | os.PathLike, cache_root: str | os.PathLike, *,
                        spacing: str | Sequence[float] = "fixed", splits: Sequence[str] = ("training", "validation"),
                        num_workers: int = 0, overwrite: bool = False, progress: bool = True) -> PreprocessedCases:
    """Plan a datalist (:func:`shared.data.plan.plan_dataset`) and preprocess it with the detector bundles'
    default chain (:func:`shared.data.transforms_chains.preprocessing_chain`): for code without a bundle config."""
    from shared.data.plan import plan_dataset
    from shared.data.transforms_chains import preprocessing_chain

    plan = plan_dataset(datalist_path, cache_root, spacing=spacing, splits=splits)
    return preprocess(datalist_path, cache_root, preprocessing_chain(plan), splits=splits, num_workers=num_workers,
                      overwrite=overwrite, progress=progress)


def preprocess_cases(cases: Sequence[CheckedCase], cache_root: str | os.PathLike, transform: Transform, *,
                     num_workers: int = 0, overwrite: bool = False, progress: bool = True) -> PreprocessedCases:
    """:func:`preprocess` for already validated cases (all ids in ``cases["all"]``)."""
    description = cache_description(transform)
    folder = Path(cache_root) / description["key"]
    with rank_zero_first():
        with cache_lock(folder):
            if read_description(folder) != description:
                write_json(folder / DESCRIPTION_FILE, description)
            write_cases(cases, transform, description["key"], folder, overwrite=overwrite, num_workers=num_workers,
                        progress=progress)
    return PreprocessedCases(os.fspath(folder), description["key"], {"all": [case.case for case in cases]})


def check_resampled_sizes(cases: Sequence[CheckedCase], target_spacing: Sequence[float]) -> None:
    """Raise :class:`InputError` naming the first scan whose grid at ``target_spacing`` would have an
    empty axis or more voxels than :data:`shared.data.resample.MAX_VOXELS` (an absurd spacing in its header)."""
    for case in cases:
        try:
            resampled_shape(case.shape, zoom_factors(spacing_of(case.affine), target_spacing))
        except ValueError as error:
            raise InputError(channel_paths(case.entry)[0], f"{error}; check the voxel spacing in its header "
                                                           "and the target spacing") from None


def write_cases(cases: Sequence[CheckedCase], transform: Transform, key: str, cache_dir: str | os.PathLike, *,
                overwrite: bool = False, num_workers: int = 0, progress: bool = True) -> None:
    """Run the chain on the cases whose cache entry is missing or stale (another datalist entry) and write them."""
    todo = [case for case in cases if overwrite or not case_is_current(
        cache_dir, case.case, key, split=case.split, entry=case.entry)]
    jobs = [(case, transform, key, os.fspath(cache_dir)) for case in todo]
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
    """Resample a loaded scan to the plan's spacing and normalise it with the plan's statistics (the
    preprocessing chain's per-scan steps, for code that holds a plan rather than a chain).

    Returns:
        ``(array, affine)``: (C, X', Y', Z') float32 C-contiguous, and its (4, 4) RAS affine.
    """
    data = {"image": volume.array, "affine": volume.affine, "sources": volume.sources}
    data = ResampleToSpacingd(plan["target_spacing"])(data)
    data = NormalizeChannelsd("image", plan["channels"])(data)
    return np.ascontiguousarray(data["image"]), data["affine"]


def case_input(case: CheckedCase) -> dict[str, Any]:
    """What the preprocessing chain receives for a validated datalist entry (see :func:`preprocess`)."""
    world, labels = entry_boxes(case.entry)
    return {"image": channel_paths(case.entry), "mask": case.entry.get("mask") or None, "boxes": world,
            "labels": labels, "instances": case.instances, "case": case.case, "split": case.split}


def preprocess_case(case: CheckedCase, transform: Transform, key: str
                    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None]:
    """One validated case → ``(record, image (C, X, Y, Z), mask (X, Y, Z) int16 or None)`` for the cache."""
    data = transform(case_input(case))
    image = _numpy(data["image"]).astype(np.float32, copy=False)
    mask = data.get("mask")
    mask = None if mask is None else _numpy(mask).astype(np.int16, copy=False)
    boxes = np.asarray(_numpy(data.get("boxes", np.zeros((0, 6)))), dtype=np.float64).reshape(-1, 6)
    record = {"case": case.case, "split": case.split, "image": case.entry["image"],
              "mask": case.entry.get("mask") or None, "boxes": boxes.round(4),
              "labels": _numpy(data.get("labels", np.zeros(0))).astype(np.int64).tolist(),
              "instances": case.instances, "shape": list(image.shape[1:]), "affine": _numpy(data["affine"]),
              "original_affine": _numpy(data.get("original_affine", data["affine"])),
              "original_shape": list(data.get("original_shape", image.shape[1:])),
              "cache_key": key, "entry_sha256": entry_digest(case.entry)}
    return record, image, mask


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _process_case(job: tuple[CheckedCase, Transform, str, str]) -> str:
    case, transform, key, cache_dir = job
    record, image, mask = preprocess_case(case, transform, key)
    write_case(cache_dir, record, image, mask)
    return case.case
