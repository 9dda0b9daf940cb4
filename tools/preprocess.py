"""Preprocess a datalist into a cache.

    python -m tools.preprocess --datalist D.json --out CACHE [--spacing fixed|median|x,y,z]
        [--splits training,validation] [--num_workers N] [--overwrite]
"""

from __future__ import annotations

from typing import Sequence

from shared.data.preprocess import preprocess
from tools._cli import check_writable_folder, run_cli


def main(datalist: str, out: str, spacing: str | Sequence[float] = "fixed",
         splits: str | Sequence[str] = ("training", "validation"), num_workers: int = 0,
         overwrite: bool = False) -> None:
    """Validate ``datalist``, then write the preprocessed cache to ``out`` (see docs/preprocessing.md)."""
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    check_writable_folder(out, what="--out")
    cases = preprocess(datalist, out, splits=tuple(splits), spacing=spacing, num_workers=int(num_workers),
                       overwrite=bool(overwrite))
    print(f"{len(cases)} cases in {out}")


if __name__ == "__main__":
    run_cli(main)
