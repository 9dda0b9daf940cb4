"""Pre-training data: unlabelled scans (a datalist's ``unlabelled`` list, or any folder of scans) into
the preprocessed cache, z-scored per image.

Self-supervised pre-training has no labels, so the detector's plan (CT clipped and z-scored with the
labelled foreground's statistics, :mod:`shared.data.fingerprint`) cannot be made; SPEC section 4 asks
for z-scored inputs, so every channel is normalised with the scan's own mean and standard deviation
(``"per_image": true`` in the plan's channel specs, read by :func:`shared.data.normalize.normalize_image`).
Entries are stripped of boxes and masks: pre-training sees images only.

The pattern is the detectors': :func:`plan_pretraining` decides the spacing and the channel specs and
writes them to ``plans.json``; the bundle's ``preprocessing`` transform chain reads them as arguments;
:func:`prepare_pretraining_data` runs the chain into the cache folder named by the chain's key
(:mod:`shared.data.cache_key`), from which :class:`shared.data.dataset.DetectionPatchDataset` draws
patches through ``train#preprocessing``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shared.checkpoints.safe_load import sha256_file
from shared.data.cache import PLAN_FILE, cache_lock, rank_zero_first
from shared.data.cache_key import package_version
from shared.data.fingerprint import channel_modalities
from shared.data.plan import parse_spacing
from shared.data.preprocess import Transform, check_resampled_sizes, preprocess_cases
from shared.data.resample import spacing_of
from shared.data.validate import CheckedCase, channel_paths, check_entry
from shared.io.atomic import write_json
from shared.io.datalist import read_datalist, write_datalist
from shared.io.errors import InputError

SCAN_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd")
LABELLED_SPLITS = ("training", "validation")
#: what the manifest records as the normalisation of pre-training inputs
NORMALIZATION = "z-score per image (per channel, the scan's own mean and std)"
_IMAGE_KEYS = ("image",)


@dataclass
class PretrainingData:
    """The preprocessed pre-training data.

    Attributes:
        plan: the plan (target spacing, per-image z-score channels).
        cases: case ids in the cache.
        datalist: the datalist they came from.
        splits: the datalist splits used.
        cache_dir: the keyed cache folder holding the cases.
    """

    plan: dict[str, Any]
    cases: list[str]
    datalist: str
    splits: list[str]
    cache_dir: str = ""

    @property
    def modality(self) -> list[str]:
        return [channel["modality"] for channel in self.plan["channels"]]

    @property
    def in_channels(self) -> int:
        return len(self.plan["channels"])


def write_folder_datalist(folder: str | os.PathLike, datalist_path: str | os.PathLike, *,
                          modality: str = "CT", recursive: bool = True) -> Path:
    """Write a datalist whose ``unlabelled`` list holds every scan in ``folder`` (one file per scan).

    Args:
        folder: folder with ``.nii.gz``, ``.nii``, ``.mhd``, ``.mha`` or ``.nrrd`` files.
        datalist_path: the datalist to write (paths inside are relative to its folder).
        modality: the scans' modality (``"CT"`` or e.g. ``"MRI"``), recorded in the manifest.
        recursive: also look in sub-folders.

    Returns:
        The datalist's path.

    Raises:
        InputError: when the folder does not exist or holds no scan.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a folder")
    files = folder.rglob("*") if recursive else folder.glob("*")
    scans = sorted(str(path.resolve()) for path in files
                   if path.is_file() and path.name.lower().endswith(SCAN_SUFFIXES))
    if not scans:
        raise InputError(folder, f"holds no scan (looked for {', '.join(SCAN_SUFFIXES)} files)")
    return write_datalist(datalist_path, {"modality": modality, "unlabelled": [{"image": scan} for scan in scans]})


def plan_pretraining(datalist: str | os.PathLike, plan_dir: str | os.PathLike, *,
                     splits: Sequence[str] = ("unlabelled",), include_labelled: bool = False,
                     spacing: str | Sequence[float] = "fixed") -> dict[str, Any]:
    """Validate the images of ``splits`` and write their plan to ``plan_dir/plans.json`` (rank 0 under torchrun).

    Args:
        datalist: datalist JSON (:mod:`shared.io.datalist`); may hold only an ``unlabelled`` list.
        plan_dir: where ``plans.json`` goes (the bundle's ``cache_dir``).
        splits: splits whose images are used.
        include_labelled: also use the images (not the labels) of the training and validation splits.
        spacing: "fixed" (1 mm), "median" (median of the scans used) or three mm values.

    Returns:
        The plan (:func:`pretraining_plan`) plus ``"splits"``: the splits used.

    Raises:
        InputError: naming the file, for an invalid entry or when the splits hold no scan.
    """
    splits = _splits(splits, include_labelled)
    content = read_datalist(datalist)
    cases = _checked_images(content, splits)
    if not cases:
        raise InputError(datalist, f"the splits {splits} hold no scan to pre-train on")
    plan = {**pretraining_plan(cases, content, datalist, spacing=spacing), "splits": splits}
    check_resampled_sizes(cases, plan["target_spacing"])
    with rank_zero_first(), cache_lock(plan_dir):
        write_json(Path(plan_dir) / PLAN_FILE, plan)
    return plan


def prepare_pretraining_data(datalist: str | os.PathLike, cache_dir: str | os.PathLike, *,
                             preprocessing: Transform, plan: dict[str, Any], num_workers: int = 0,
                             overwrite: bool = False, progress: bool = True) -> PretrainingData:
    """Run the ``preprocessing`` chain over the images of the plan's splits into the keyed cache (once).

    Args:
        datalist: datalist JSON, as given to :func:`plan_pretraining`.
        cache_dir: the cache root; the cases go to ``cache_dir/<key of preprocessing>``.
        preprocessing: the bundle's ``preprocessing`` chain (see :func:`shared.data.preprocess.preprocess`).
        plan: :func:`plan_pretraining`'s plan, which the chain was built from.
        num_workers: processes for the per-case work; 0 works in this process.
        overwrite: redo every case even if the cache is current.
        progress: show a tqdm progress bar.
    """
    splits = list(plan["splits"])
    cases = _checked_images(read_datalist(datalist), splits)
    cached = preprocess_cases(cases, cache_dir, preprocessing, num_workers=num_workers, overwrite=overwrite,
                              progress=progress)
    return PretrainingData(plan, [case.case for case in cases], os.fspath(datalist), splits, cached.cache_dir)


def pretraining_plan(cases: Sequence[CheckedCase], datalist: dict[str, Any], datalist_path: str | os.PathLike, *,
                     spacing: str | Sequence[float] = "fixed") -> dict[str, Any]:
    """The plan of a pre-training cache: target spacing and one per-image z-score spec per channel."""
    mode, target = parse_spacing(spacing)
    if target is None:
        target = np.median(np.stack([spacing_of(case.affine) for case in cases]), axis=0).tolist()
    modalities = channel_modalities(datalist, len(channel_paths(cases[0].entry)), source=os.fspath(datalist_path))
    channels = [{"modality": modality, "clip": None, "mean": None, "std": None, "per_image": True}
                for modality in modalities]
    return {"target_spacing": [float(v) for v in target], "spacing_mode": mode, "channels": channels,
            "classes": [], "num_classes": 0, "datalist": str(Path(datalist_path).resolve()),
            "datalist_sha256": sha256_file(datalist_path), "package_version": package_version()}


def _splits(splits: Sequence[str], include_labelled: bool) -> list[str]:
    return list(dict.fromkeys([*splits, *(LABELLED_SPLITS if include_labelled else ())]))


def _checked_images(datalist: dict[str, Any], splits: Sequence[str]) -> list[CheckedCase]:
    """Validate the image part of every entry; case ids must be unique across the splits."""
    cases, seen, channels = [], {}, None
    for split in splits:
        for entry in datalist.get(split, []):
            checked = check_entry({key: entry[key] for key in _IMAGE_KEYS}, split)
            first = channel_paths(entry)[0]
            if checked.case in seen:
                raise InputError(first, f"case id '{checked.case}' also names {seen[checked.case]}; case ids are "
                                        "file names without extension and must be unique")
            count = len(channel_paths(entry))
            if channels is not None and count != channels:
                raise InputError(first, f"has {count} channels, other scans have {channels}")
            seen[checked.case], channels = first, count
            cases.append(checked)
    return cases
