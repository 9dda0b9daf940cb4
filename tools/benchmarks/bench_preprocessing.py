"""Preprocessing throughput and peak memory: ours against a plain MONAI ``Compose`` doing the same steps.

    python -m tools.benchmarks.bench_preprocessing [--num_volumes 8] [--shape 512,512,200]
        [--spacing 0.7,0.7,1.25] [--workdir DIR] [--reuse]

Writes ``num_volumes`` synthetic CT scans (int16 NIfTI, a body ellipse with noise and one bright
nodule each) to a temporary folder, then runs, each in a fresh process with one thread:

- ``ours: preprocess()``: the whole pipeline (``preprocess_datalist``: validation, fingerprint pass, the
  bundles' preprocessing transform chain resampling to 1 mm and normalising, cache writing);
- ``ours: per volume``: ``load_volume`` + ``preprocess_volume`` + ``np.save`` per scan, with the plan of
  the run before (the steps MONAI's pipeline does, no validation and no fingerprint);
- ``MONAI Compose``: ``LoadImaged``, ``EnsureChannelFirstd``, ``Spacingd`` (1 mm, bilinear, float32),
  ``ScaleIntensityRanged`` (clip to the same percentiles), ``NormalizeIntensityd`` (same mean/std),
  ``np.save``.

Prints a markdown table: seconds, volumes per second, peak resident memory of the process and how
much of it came after the imports (torch and MONAI alone take about half a GiB).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNS = ("ours: preprocess()", "ours: per volume", "MONAI Compose")


def write_volumes(folder: Path, count: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Path:
    """Synthetic chest-like CT scans and a datalist with one nodule box each."""
    from shared.boxes.convention import boxes_voxel_to_world
    from shared.io.datalist import write_datalist
    from shared.io.images import save_nifti

    rng = np.random.default_rng(0)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-shape[0] * spacing[0] / 2, -shape[1] * spacing[1] / 2, -shape[2] * spacing[2]]
    x, y = np.ogrid[: shape[0], : shape[1]]
    body = ((x - shape[0] / 2) / (0.45 * shape[0])) ** 2 + ((y - shape[1] / 2) / (0.35 * shape[1])) ** 2 < 1
    entries = []
    for index in range(count):
        array = rng.normal(0, 30, size=shape).astype(np.float32)
        array[~body] = -1000
        centre = [int(rng.integers(s // 3, 2 * s // 3)) for s in shape]
        box = np.array([[c - 5 for c in centre] + [c + 5 for c in centre]], dtype=np.float32)
        array[tuple(slice(int(a), int(b)) for a, b in zip(box[0, :3], box[0, 3:]))] += 400
        path = save_nifti(folder / f"scan{index:02d}_0000.nii.gz", array.astype(np.int16), affine)
        entries.append({"image": str(path), "box": boxes_voxel_to_world(box, affine).tolist(), "label": [0]})
    return write_datalist(folder / "datalist.json", {"training": entries, "classes": ["nodule"]})


def run_ours_preprocess(datalist: Path, out: Path) -> None:
    from shared.data.preprocess import preprocess_datalist

    preprocess_datalist(datalist, out, spacing="fixed", progress=False)


def run_ours_per_volume(datalist: Path, out: Path, plan: dict) -> None:
    from shared.data.preprocess import preprocess_volume
    from shared.io.datalist import read_datalist
    from shared.io.images import load_volume

    out.mkdir(parents=True, exist_ok=True)
    for index, entry in enumerate(read_datalist(datalist)["training"]):
        array, _ = preprocess_volume(load_volume(entry["image"]), plan)
        np.save(out / f"{index}.npy", array)


def run_monai(datalist: Path, out: Path, plan: dict) -> None:
    from monai.transforms import (Compose, EnsureChannelFirstd, LoadImaged, NormalizeIntensityd,
                                  ScaleIntensityRanged, Spacingd)

    from shared.io.datalist import read_datalist

    channel = plan["channels"][0]
    low, high = channel["clip"]
    pipeline = Compose([
        LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
        Spacingd("image", pixdim=plan["target_spacing"], mode="bilinear", dtype=np.float32),
        ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=low, b_max=high, clip=True),
        NormalizeIntensityd("image", subtrahend=channel["mean"], divisor=channel["std"]),
    ])
    out.mkdir(parents=True, exist_ok=True)
    for index, entry in enumerate(read_datalist(datalist)["training"]):
        np.save(out / f"{index}.npy", np.asarray(pipeline({"image": entry["image"]})["image"], dtype=np.float32))


def _peak_mib() -> float:
    """This process's peak resident memory. ``VmHWM`` belongs to the process's own address space;
    ``ru_maxrss`` would carry over the parent's peak through fork + exec on Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux, an upper bound


def _child(which: str, datalist: str, out: str) -> None:
    """One measured run in this (fresh) process; prints a JSON line with its numbers."""
    import torch

    torch.set_num_threads(1)
    import monai.transforms  # noqa: F401  imports are not what we measure
    import shared.data.preprocess  # noqa: F401

    baseline_mib = _peak_mib()
    plan_path = Path(out).parent / "ours_preprocess" / "plans.json"
    start = time.perf_counter()
    if which == RUNS[0]:
        run_ours_preprocess(Path(datalist), Path(out))
    elif which == RUNS[1]:
        run_ours_per_volume(Path(datalist), Path(out), json.loads(plan_path.read_text()))
    else:
        run_monai(Path(datalist), Path(out), json.loads(plan_path.read_text()))
    seconds = time.perf_counter() - start
    peak_mib = _peak_mib()
    shapes = sorted({tuple(np.load(p, mmap_mode="r").shape) for p in Path(out).rglob("*.npy")})
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib, "baseline_mib": baseline_mib,
                      "shapes": [list(shape) for shape in shapes]}))


def _measure(which: str, datalist: Path, out: Path) -> dict:
    """Run one pipeline in a fresh process (its own imports, its own peak memory)."""
    shutil.rmtree(out, ignore_errors=True)  # a current cache would be skipped, not measured
    result = subprocess.run([sys.executable, "-m", "tools.benchmarks.bench_preprocessing", "_child", which,
                             str(datalist), str(out)], capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=Path(__file__).resolve().parents[2],
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _row(which: str, numbers: dict, count: int) -> str:
    shapes = " ".join("x".join(map(str, shape[1:])) for shape in numbers["shapes"])
    return (f"| {which} | {numbers['seconds']:.1f} | {count / numbers['seconds']:.3f} | {numbers['peak_mib']:.0f} | "
            f"{numbers['peak_mib'] - numbers['baseline_mib']:.0f} | {shapes} |")


def main(num_volumes: int = 8, shape: str | tuple = "512,512,200", spacing: str | tuple = "0.7,0.7,1.25",
         workdir: str | None = None, reuse: bool = False) -> None:
    """Generate the scans (or, with ``reuse``, take those already in ``workdir``), time the three runs,
    print the markdown table."""
    shape = tuple(int(v) for v in (shape.split(",") if isinstance(shape, str) else shape))
    spacing = tuple(float(v) for v in (spacing.split(",") if isinstance(spacing, str) else spacing))
    root = Path(workdir or tempfile.mkdtemp(prefix="bench_preprocessing_"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    datalist = root / "datalist.json"
    if reuse and datalist.exists():
        print(f"reusing the scans in {root}", file=sys.stderr)
    else:
        datalist = write_volumes(root, num_volumes, shape, spacing)
        seconds = time.perf_counter() - started
        print(f"wrote {num_volumes} scans of {shape} at {spacing} mm in {seconds:.0f} s", file=sys.stderr)
    rows = [_row(which, _measure(which, datalist, root / folder), num_volumes)
            for which, folder in zip(RUNS, ("ours_preprocess", "ours_per_volume", "monai"))]
    size = "x".join(map(str, shape))
    table = "\n".join([f"{num_volumes} scans {size} int16 NIfTI at {spacing} mm → 1 mm, 1 thread", "",
                       "| pipeline | seconds | volumes / s | peak RSS (MiB) | above imports (MiB) | output shape |",
                       "|---|---|---|---|---|---|", *rows])
    print(table)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(*sys.argv[2:5])
    else:
        import fire

        fire.Fire(main)
