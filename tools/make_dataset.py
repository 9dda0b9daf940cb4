"""Generate an embedded synthetic detection data set (see docs/data.md).

    python -m tools.make_dataset lung_ct --out data/lung_ct --preset quick --seed 0
    python -m tools.make_dataset lung_nodules --out data/lung_nodules --workers 2
    python -m tools.make_dataset brain_mri --out data/brain_mri --num_training 8 --shape "[48,48,32]"
"""

from __future__ import annotations

from shared.data.synthetic.dataset import make_dataset
from shared.io.errors import InputError
from tools._cli import check_writable_folder, run_cli


def main(task: str, out: str, preset: str = "quick", seed: int = 0, num_training: int | None = None,
         num_validation: int | None = None, num_test: int | None = None, num_unlabelled: int | None = None,
         shape: tuple[int, int, int] | None = None, previews: bool = True, workers: int = 1) -> str:
    """Write ``OUT/datalist.json``, ``imagesTr``, ``labelsTr``, ``imagesUnlabelled`` and ``previews``.

    Args:
        task: lung_ct (benign / malignant nodules), lung_nodules (the same scans, one class) or brain_mri.
        out: output folder.
        preset: quick (small volumes; lung_ct 96/6/10, brain_mri 24/6/10, + 16 unlabelled) or full (realistic scan sizes).
        seed: same seed, same bytes.
        num_training: override the preset's number of training cases (likewise the other num_*).
        shape: override the grid, e.g. "[48,48,32]" (the preset's spacing is kept).
        previews: write PNG previews (False to skip).
        workers: parallel processes (the output does not depend on it).

    Returns:
        The datalist's path.
    """
    counts = {split: int(n) for split, n in (("training", num_training), ("validation", num_validation),
                                             ("test", num_test), ("unlabelled", num_unlabelled)) if n is not None}
    if shape is not None and (len(shape) != 3 or min(int(n) for n in shape) < 8):
        raise InputError(None, f"--shape must be three sizes of at least 8 voxels, got {shape}")
    check_writable_folder(out, what="--out")
    path = make_dataset(task, out, preset=preset, seed=seed, counts=counts,
                        shape=None if shape is None else tuple(int(n) for n in shape),
                        previews=bool(previews), workers=int(workers))
    return str(path)


if __name__ == "__main__":
    run_cli(main)
