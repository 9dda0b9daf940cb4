"""Throughput of the training data pipeline: samples per second of one process (one DataLoader worker).

Writes a synthetic cache of CT-sized cases (normalised noise, spheres as instances) into a temporary
folder, then times :class:`shared.data.dataset.DetectionPatchDataset` with the bundles' training chain
(:mod:`shared.data.transforms_chains`) and one thread::

    python -m tools.benchmarks.bench_sampling --patch_sizes "[96,128]" --samples 20
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import fire
import numpy as np
import torch

from shared.boxes.convention import boxes_from_instance_mask
from monai.transforms import Compose

from shared.data.cache import case_files
from shared.data.dataset import DetectionPatchDataset
from shared.data.transforms_chains import training_chain


def _chain(size: int, name: str) -> Compose:
    """"none": the patch only; "default": the bundles' chain; "all_on": every random transform at probability 1."""
    chain = training_chain(size, batch_size=1, augment=name != "none")
    if name == "all_on":
        for transform in chain.transforms:
            if hasattr(transform, "prob") and type(transform).__name__ != "RandMirrorPatchd":
                transform.prob = 1.0
    return chain


def write_synthetic_cache(folder: Path, *, cases: int = 2, shape: tuple[int, int, int] = (256, 256, 200), seed: int = 0) -> list[str]:
    """Cases with ``shape`` voxels, 8 spherical instances each, following the cache contract."""
    rng = np.random.default_rng(seed)
    names = []
    for index in range(cases):
        name = f"case{index:03d}"
        instance_map = np.zeros(shape, dtype=np.int16)
        for instance in range(1, 9):
            centre, radius = rng.uniform(20, np.array(shape) - 20), rng.uniform(3, 12)
            low, high = np.floor(centre - radius).astype(int), np.ceil(centre + radius).astype(int) + 1
            grid = np.ogrid[tuple(slice(a, b) for a, b in zip(low, high))]
            inside = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2
            instance_map[tuple(slice(a, b) for a, b in zip(low, high))][inside] = instance
        boxes, ids = boxes_from_instance_mask(instance_map)
        files = case_files(folder, name)
        np.save(files.image, rng.standard_normal((1, *shape), dtype=np.float32))
        np.save(files.mask, instance_map)
        meta = {"case": name, "split": "training", "image": [f"{name}_0000.nii.gz"], "mask": f"{name}.nii.gz",
                "boxes": boxes.tolist(), "labels": [0] * len(ids), "instances": ids.tolist(), "shape": list(shape),
                "affine": np.eye(4).tolist(), "original_affine": np.eye(4).tolist(), "original_shape": list(shape),
                "cache_key": "benchmark"}
        files.record.write_text(json.dumps(meta))
        names.append(name)
    return names


def benchmark(patch_sizes: tuple[int, ...] = (96, 128), samples: int = 20, shape: tuple[int, int, int] = (256, 256, 200)) -> None:
    """Samples per second for each patch size, with default and with all-on augmentation."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        cases = write_synthetic_cache(Path(folder), shape=tuple(shape))
        for size in patch_sizes:
            for name in ("none", "default", "all_on"):
                dataset = DetectionPatchDataset(folder, cases, _chain(size, name), iterations_per_epoch=samples,
                                                batch_size=1)
                dataset[0]  # page the files in
                start, start_cpu = time.perf_counter(), time.process_time()
                for index in range(samples):
                    dataset[index]
                rate = samples / (time.perf_counter() - start)
                cpu_rate = samples / (time.process_time() - start_cpu)
                print(f"patch {size}^3, augmentation {name}: {rate:.2f} samples/s wall, "
                      f"{cpu_rate:.2f} samples per CPU second", flush=True)


if __name__ == "__main__":
    fire.Fire(benchmark)
