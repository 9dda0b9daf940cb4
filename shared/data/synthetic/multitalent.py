"""The embedded multi-dataset segmentation collection for supervised (MultiTalent) pre-training.

Three segmentation data sets with different label sets and channel counts, drawn from the detection
generators' cases (:func:`shared.data.synthetic.dataset.make_case`) with their semantic label maps
(``Case.segmentations``):

- ``lung_ct`` (1 channel, CT): lungs, vessels, nodules;
- ``brain_mri`` (2 channels, T1c + FLAIR): CSF, grey matter, white matter, lesions;
- ``chest_ct`` (1 channel, CT): heart and great vessels, bone — other chests than ``lung_ct``'s (its
  own seed), as real collections hold several data sets of one modality with different labels.

:func:`make_multitalent_dataset` writes ``<id>/imagesTr``, ``<id>/labelsTr`` per data set and the
multi-dataset datalist (:mod:`shared.io.multi_datalist`) ``multitalent.json``. Cases come from the
generators' ``"training"`` and ``"validation"`` streams at a seed of their own, so they are not the
detection data sets' cases of the same seed (pre-training must not see the downstream scans).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from tqdm import tqdm

from shared.data.synthetic.dataset import TASKS, make_case
from shared.io.errors import InputError
from shared.io.images import save_nifti
from shared.io.multi_datalist import write_multi_datalist

DATALIST_NAME = "multitalent.json"


class SegmentationSource(NamedTuple):
    """One data set of the collection: which generator, which label set, which seed offset."""

    task: str
    label_set: str
    seed_offset: int


#: data set id → source; the seed offsets keep every data set's cases apart from the detection data
#: sets made with seeds 0..999 and from each other
DATASETS: dict[str, SegmentationSource] = {
    "lung_ct": SegmentationSource("lung_ct", "lung", 1000),
    "brain_mri": SegmentationSource("brain_mri", "brain", 2000),
    "chest_ct": SegmentationSource("lung_ct", "chest", 3000),
}
SPLIT_CODES = {"training": "tr", "validation": "va"}


def make_multitalent_dataset(out: str | os.PathLike, *, preset: str = "quick", seed: int = 0,
                             counts: dict[str, int] | None = None, shape: tuple[int, int, int] | None = None,
                             datasets: list[str] | None = None, workers: int = 1, progress: bool = True) -> Path:
    """Write the collection and its multi-dataset datalist.

    Args:
        out: output folder (created).
        preset: the generators' preset (``"quick"`` or ``"full"``).
        seed: the collection's seed (each data set adds its offset).
        counts: cases per data set and split, ``{"training": n, "validation": m}`` (default 16 and 4).
        shape: grid overriding the preset's (tests use tiny ones).
        datasets: which data sets (default all of :data:`DATASETS`).
        workers: processes generating cases (the output does not depend on it).
        progress: show a tqdm bar.

    Returns:
        The path of ``multitalent.json``.
    """
    counts = {"training": 16, "validation": 4, **(counts or {})}
    names = list(DATASETS) if datasets is None else list(datasets)
    unknown = sorted(set(names) - set(DATASETS))
    if unknown or set(counts) - set(SPLIT_CODES) or counts["training"] < 1:
        raise InputError(None, f"datasets must be among {sorted(DATASETS)} (got {unknown or names}) and counts "
                               f"a positive 'training' and a 'validation' number (got {counts})")
    out = Path(out)
    jobs = [(name, split, index, seed, preset, shape, str(out))
            for name in names for split in SPLIT_CODES for index in range(int(counts[split]))]
    collection = {name: _description(name) for name in names}
    with tqdm(total=len(jobs), desc="multitalent", disable=not progress) as bar:
        for name, split, entry in _run(jobs, workers):
            collection[name][split].append(entry)
            bar.update()
    return write_multi_datalist(out / DATALIST_NAME, collection, name="embedded_multitalent")


def _description(name: str) -> dict[str, Any]:
    source = DATASETS[name]
    spec = TASKS[source.task]
    return {"classes": list(spec.label_sets[source.label_set]), "modality": list(spec.channels),
            "description": f"{source.task} cases, label set '{source.label_set}'", "training": [], "validation": []}


def _run(jobs: list[tuple], workers: int):
    if workers <= 1:
        yield from map(_write_case, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_write_case, jobs)  # job order, so the datalist does not depend on timing


def _write_case(job: tuple) -> tuple[str, str, dict[str, Any]]:
    name, split, index, seed, preset, shape, out = job
    source = DATASETS[name]
    case = make_case(source.task, split, index, seed=int(seed) + source.seed_offset, preset=preset, shape=shape)
    case_id = f"{name}_{SPLIT_CODES[split]}_{index:03d}"
    folder = Path(out) / name
    images = [str(save_nifti(folder / "imagesTr" / f"{case_id}_{c:04d}.nii.gz", case.image[c], case.affine))
              for c in range(case.image.shape[0])]
    label = save_nifti(folder / "labelsTr" / f"{case_id}.nii.gz", case.segmentations[source.label_set], case.affine)
    return name, split, {"image": images if len(images) > 1 else images[0], "label": str(label)}
