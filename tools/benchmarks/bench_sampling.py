"""Throughput of the training data pipeline: samples per second of one process (one DataLoader worker).

Writes a synthetic cache of CT-sized cases (normalised noise, spheres as instances) into a temporary
folder, then times :class:`shared.data.dataset.DetectionPatchDataset` with one thread::

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
from shared.data.augment import AugmentationSettings
from shared.data.cache import case_files
from shared.data.dataset import DetectionPatchDataset

#: Every augmentation on for every sample: the worst case.
ALL_ON = {key: 1.0 for key in AugmentationSettings().to_spec() if key.endswith("probability") and key != "mirror_probability"}


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
                "plan_hash": "benchmark"}
        files.record.write_text(json.dumps(meta))
        names.append(name)
    return names


def benchmark(patch_sizes: tuple[int, ...] = (96, 128), samples: int = 20, shape: tuple[int, int, int] = (256, 256, 200)) -> None:
    """Samples per second for each patch size, with default and with all-on augmentation."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        cases = write_synthetic_cache(Path(folder), shape=tuple(shape))
        for size in patch_sizes:
            for name, augmentation in (("none", None), ("default", {}), ("all_on", ALL_ON)):
                dataset = DetectionPatchDataset(folder, cases, size, iterations_per_epoch=samples, batch_size=1,
                                                augmentation=augmentation)
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
