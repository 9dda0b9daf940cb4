"""A tiny preprocessed cache, written by the cache's own writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.boxes.convention import boxes_from_instance_mask
from shared.data.cache import write_case as cache_write_case


def write_case(cache: Path, case: str, image: np.ndarray, *, mask=None, boxes=None, labels=()) -> None:
    """Write one case through :func:`shared.data.cache.write_case`; a mask gives the boxes and instance ids."""
    instances = None
    if mask is not None:
        boxes, instances = boxes_from_instance_mask(mask)
        instances = instances.tolist()
    boxes = np.zeros((0, 6)) if boxes is None else np.asarray(boxes, dtype=np.float64)
    record = {
        "case": case, "split": "training", "image": [f"/raw/{case}_0000.nii.gz"],
        "mask": None if mask is None else f"/raw/{case}.nii.gz",
        "boxes": boxes.tolist(), "labels": list(labels), "instances": instances,
        "shape": list(image.shape[1:]), "affine": np.eye(4).tolist(), "original_affine": np.eye(4).tolist(),
        "original_shape": list(image.shape[1:]), "cache_key": "test", "entry_sha256": "test",
    }
    cache_write_case(cache, record, image, mask)


@pytest.fixture
def case_writer():
    """:func:`write_case`, for tests that add a case of their own."""
    return write_case


@pytest.fixture
def tiny_cache(tmp_path) -> Path:
    """Cases: ``masked`` (2 instances, ids 1 and 3, classes 0 and 1), ``boxes_only`` (2 boxes, one with
    fractional edges), ``small`` (smaller than an 8-voxel patch), ``empty`` (mask without objects)."""
    rng = np.random.default_rng(1)
    cache = tmp_path / "cache"
    cache.mkdir()
    plans = {"target_spacing": [1.0, 1.0, 1.0], "spacing_mode": "fixed",
             "channels": [{"modality": "CT", "clip": [-1000, 400], "mean": 0.0, "std": 1.0}],
             "classes": ["nodule", "mass"], "num_classes": 2, "datalist": "datalist.json", "version": 1,
             "hash": "test"}
    (cache / "plans.json").write_text(json.dumps(plans))
    mask = np.zeros((20, 18, 16), dtype=np.int16)
    mask[3:6, 4:8, 2:5] = 1
    mask[12:17, 9:11, 8:14] = 3
    mask[13, 11, 10] = 3  # not box-shaped
    write_case(cache, "masked", rng.normal(size=(1, 20, 18, 16)), mask=mask, labels=[0, 1])
    write_case(cache, "boxes_only", rng.normal(size=(1, 20, 18, 16)),
               boxes=[[2, 3, 4, 6, 7, 9], [10, 11, 5, 14.5, 16, 9.5]], labels=[1, 0])
    small = np.zeros((6, 5, 4), dtype=np.int16)
    small[1:3, 1:4, 1:3] = 1
    write_case(cache, "small", rng.normal(size=(1, 6, 5, 4)) + 5.0, mask=small, labels=[1])
    write_case(cache, "empty", rng.normal(size=(1, 12, 12, 12)), mask=np.zeros((12, 12, 12), np.int16))
    return cache
