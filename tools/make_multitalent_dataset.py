"""Generate the embedded multi-dataset segmentation collection for MultiTalent pre-training (docs/multitalent.md).

    python -m tools.make_multitalent_dataset --out data/multitalent --num_training 16 --num_validation 4
    python -m tools.make_multitalent_dataset --out /tmp/mt --num_training 2 --shape "[32,32,32]"
"""

from __future__ import annotations

from shared.data.synthetic.multitalent import make_multitalent_dataset
from shared.io.errors import InputError
from tools._cli import check_writable_folder, run_cli


def main(out: str, preset: str = "quick", seed: int = 0, num_training: int = 16, num_validation: int = 4,
         shape: tuple[int, int, int] | None = None, datasets: tuple[str, ...] | None = None, workers: int = 1) -> str:
    """Write ``OUT/<data set>/imagesTr``, ``OUT/<data set>/labelsTr`` and ``OUT/multitalent.json``.

    Args:
        out: output folder.
        preset: the generators' preset, quick or full.
        seed: same seed, same bytes.
        num_training: training cases per data set; num_validation likewise.
        shape: override the grid, e.g. "[48,48,32]" (the preset's spacing is kept).
        datasets: a subset of lung_ct, brain_mri, chest_ct (default all).
        workers: parallel processes (the output does not depend on it).

    Returns:
        The multi-dataset datalist's path.
    """
    if shape is not None and (len(shape) != 3 or min(int(n) for n in shape) < 8):
        raise InputError(None, f"--shape must be three sizes of at least 8 voxels, got {shape}")
    check_writable_folder(out, what="--out")
    path = make_multitalent_dataset(
        out, preset=preset, seed=seed, counts={"training": int(num_training), "validation": int(num_validation)},
        shape=None if shape is None else tuple(int(n) for n in shape),
        datasets=None if datasets is None else list(datasets), workers=int(workers))
    return str(path)


if __name__ == "__main__":
    run_cli(main)
