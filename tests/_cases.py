"""Tiny synthetic data sets written to disk, for the data and io tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.boxes.convention import boxes_from_instance_mask, boxes_voxel_to_world
from shared.io.datalist import write_datalist
from shared.io.images import save_nifti


def spaced_affine(spacing=(0.7, 0.8, 1.25), origin=(-10.0, 5.0, 3.0), flip_x: bool = False) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    if flip_x:
        affine[0, 0] = -affine[0, 0]
    affine[:3, 3] = origin
    return affine


def write_scan(folder: Path, name: str, *, rng, shape=(20, 18, 12), affine=None, objects=2, channels=1,
               with_mask=True, dtype=np.int16, suffix="_0000") -> dict:
    """One scan with cube objects brighter than the background; returns its datalist entry."""
    affine = spaced_affine() if affine is None else affine
    mask = np.zeros(shape, dtype=np.int16)
    for instance in range(1, objects + 1):
        size = rng.integers(2, 5, size=3)
        start = [int(rng.integers(0, s - z)) for s, z in zip(shape, size)]
        mask[tuple(slice(a, a + z) for a, z in zip(start, size))] = instance
    images = []
    for channel in range(channels):
        array = rng.normal(-500 + 100 * channel, 50, size=shape)
        array[mask > 0] = rng.normal(40, 10, size=int((mask > 0).sum()))
        path = folder / f"{name}_{channel:04d}.nii.gz" if suffix else folder / f"{name}.nii.gz"
        save_nifti(path, array.astype(dtype), affine)
        images.append(str(path))
    boxes, ids = boxes_from_instance_mask(mask)
    entry = {"image": images if channels > 1 else images[0], "box": boxes_voxel_to_world(boxes, affine).tolist(),
             "label": [int(i % 2) for i in ids]}
    if with_mask:
        save_nifti(folder / f"{name}_mask.nii.gz", mask, affine)
        entry["mask"] = str(folder / f"{name}_mask.nii.gz")
    return entry


def write_dataset(folder: Path, *, rng, training=3, validation=1, with_mask=True, **scan) -> Path:
    """A datalist with ``training`` + ``validation`` scans; returns the datalist path."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = [write_scan(folder, f"case{index}", rng=rng, with_mask=with_mask, **scan)
               for index in range(training + validation)]
    path = folder / "datalist.json"
    write_datalist(path, {"training": entries[:training], "validation": entries[training:],
                          "classes": ["benign", "malignant"]})
    return path
