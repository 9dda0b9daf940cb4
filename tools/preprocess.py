"""Preprocess a datalist into a cache with the detector bundles' default preprocessing chain.

    python -m tools.preprocess --datalist D.json --out CACHE [--spacing fixed|median|x,y,z]
        [--splits training,validation] [--num_workers N] [--overwrite]

The plan goes to ``CACHE/plans.json`` and the cases to ``CACHE/<key>/``, the folder named by the chain's
key (see docs/preprocessing.md); a bundle run with the same data, spacing and chain reuses them.
"""

from __future__ import annotations

from typing import Sequence

from shared.data.preprocess import preprocess_datalist
from tools._cli import check_writable_folder, run_cli


def main(datalist: str, out: str, spacing: str | Sequence[float] = "fixed",
         splits: str | Sequence[str] = ("training", "validation"), num_workers: int = 0,
         overwrite: bool = False) -> None:
    """Validate ``datalist``, then write the preprocessed cache under ``out`` (see docs/preprocessing.md)."""
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    check_writable_folder(out, what="--out")
    cached = preprocess_datalist(datalist, out, splits=tuple(splits), spacing=spacing, num_workers=int(num_workers),
                                 overwrite=bool(overwrite))
    print(f"{sum(len(cases) for cases in cached.cases.values())} cases in {cached.cache_dir}")


if __name__ == "__main__":
    run_cli(main)
