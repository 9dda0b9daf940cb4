"""Write a whole synthetic detection data set: NIfTI images and instance masks, datalist, previews.

Every case draws from its own generator, seeded by ``(seed, split, index in split)``, so a case is
the same whatever the other splits' sizes, and cases can be made in any order or in parallel; the
same seed gives byte-identical files. Every tenth case of each split (index 3, 13, 23, ...) has no
object, so even a small split holds an empty scan.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from shared.boxes.convention import boxes_from_instance_mask, boxes_voxel_to_world
from shared.data.synthetic.brain_mri import BRAIN_MRI
from shared.data.synthetic.case import Case, TaskSpec
from shared.data.synthetic.lung_ct import LUNG_CT, LUNG_NODULES
from shared.data.synthetic.previews import save_case_preview, save_mosaic, thumbnail
from shared.io.datalist import write_datalist
from shared.io.errors import InputError
from shared.io.images import save_nifti

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (LUNG_CT, LUNG_NODULES, BRAIN_MRI)}
SPLITS = ("training", "validation", "test", "unlabelled")
_CODES = {"training": "tr", "validation": "va", "test": "ts", "unlabelled": "un"}


def case_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one case: independent of every other case's."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLITS.index(split), int(index))))


def is_empty_case(index: int) -> bool:
    """Whether case ``index`` of a split is an object-free scan (one in ten)."""
    return index % 10 == 3


def make_case(task: str, split: str, index: int, *, seed: int = 0, preset: str = "quick",
              shape: tuple[int, int, int] | None = None) -> Case:
    """Generate one case of ``task`` in memory (what :func:`make_dataset` writes)."""
    spec = _task(task)
    grid_shape, spacing = spec.grids[_preset(spec, preset)]
    return spec.generate(case_rng(seed, split, index), tuple(shape or grid_shape), spacing, preset,
                         is_empty_case(index))


def make_dataset(task: str, out: str | os.PathLike, *, preset: str = "quick", seed: int = 0,
                 counts: dict[str, int] | None = None, shape: tuple[int, int, int] | None = None,
                 previews: bool = True, workers: int = 1, progress: bool = True) -> Path:
    """Generate and write a data set.

    Args:
        task: ``"lung_ct"`` or ``"brain_mri"``.
        out: the data set's folder (created).
        preset: ``"quick"`` (small volumes) or ``"full"``; the task's ``counts`` give the cases per split.
        seed: the data set's seed.
        counts: cases per split, overriding the preset's (keys from :data:`SPLITS`).
        shape: grid (X, Y, Z) overriding the preset's (spacing stays), e.g. tiny sizes for tests.
        previews: write ``previews/<case>.png`` for labelled cases and ``previews/overview.png``.
        workers: processes generating cases in parallel (results do not depend on it).
        progress: show a tqdm bar.

    Returns:
        The path of ``datalist.json``.
    """
    spec = _task(task)
    preset = _preset(spec, preset)
    counts = {**dict(zip(SPLITS, spec.counts[preset])), **(counts or {})}
    out = Path(out)
    jobs = [(task, split, index, seed, preset, shape, str(out), previews)
            for split in SPLITS for index in range(int(counts[split]))]
    entries: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    thumbnails = []
    with tqdm(total=len(jobs), desc=f"{task} ({preset})", disable=not progress) as bar:
        for split, entry, small in _run(jobs, workers):
            entries[split].append(entry)
            if small is not None:
                thumbnails.append((Path(entry["mask"]).name.removesuffix(".nii.gz"), small))
            bar.update()
    if previews and thumbnails:
        save_mosaic(out / "previews" / "overview.png", thumbnails, spec.classes, spec.modality)
    datalist = {
        "task": task, "seed": int(seed), "preset": preset, "classes": list(spec.classes),
        "modality": spec.modality if spec.modality == "CT" else [spec.modality] * len(spec.channels),
        "channels": list(spec.channels), "credits": spec.credits, **entries,
    }
    return write_datalist(out / "datalist.json", datalist)


def _run(jobs: list[tuple], workers: int):
    if workers <= 1:
        yield from map(_write_case, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_write_case, jobs)  # keeps job order, so the datalist does not depend on timing


def _write_case(job: tuple) -> tuple[str, dict[str, Any], Case | None]:
    task, split, index, seed, preset, shape, out, previews = job
    spec, out = TASKS[task], Path(out)
    case = make_case(task, split, index, seed=seed, preset=preset, shape=shape)
    name = f"{task}_{_CODES[split]}_{index:03d}"
    folder = out / ("imagesUnlabelled" if split == "unlabelled" else "imagesTr")
    images = [save_nifti(folder / f"{name}_{c:04d}.nii.gz", case.image[c], case.affine)
              for c in range(case.image.shape[0])]
    entry: dict[str, Any] = {"image": [str(p) for p in images] if len(images) > 1 else str(images[0])}
    if split == "unlabelled":
        return split, entry, None
    mask_path = save_nifti(out / "labelsTr" / f"{name}.nii.gz", case.instances, case.affine)
    boxes, ids = boxes_from_instance_mask(case.instances)
    entry.update({
        "mask": str(mask_path), "box": np.round(boxes_voxel_to_world(boxes, case.affine), 4).tolist(),
        "label": [int(case.labels[i - 1]) for i in ids], "instances": [int(i) for i in ids],
    })
    if previews:
        save_case_preview(out / "previews" / f"{name}.png", case, spec.classes, spec.modality,
                          f"{name}: {len(ids)} object(s)")
    return split, entry, thumbnail(case)


def _task(task: str) -> TaskSpec:
    if task not in TASKS:
        raise InputError(None, f"unknown task '{task}': choose one of {sorted(TASKS)}")
    return TASKS[task]


def _preset(spec: TaskSpec, preset: str) -> str:
    if preset not in spec.grids:
        raise InputError(None, f"unknown preset '{preset}' for {spec.name}: choose one of {sorted(spec.grids)}")
    return preset
