"""The preprocessing plan: what the data set's fingerprint decides (spacing, intensity statistics,
classes), written to ``plans.json`` and read by the bundle's preprocessing transforms as arguments.

``plans.json``: ``{"target_spacing": [sx, sy, sz] mm, "spacing_mode": "fixed" | "median" | "custom",
"channels": [{"modality", "clip", "mean", "std"}], "classes": [names], "num_classes": C, "datalist":
path, "datalist_sha256", "package_version"}``. A rerun reuses the plan without fingerprinting again while
the datalist file, the spacing request and the package version are unchanged. The plan carries no hash
of its own: the preprocessing cache is keyed by the transform chain that reads it
(:mod:`shared.data.cache_key`), so a changed plan gives a new cache through the transforms' arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shared.checkpoints.safe_load import sha256_file
from shared.data.cache_key import package_version
from shared.io.atomic import write_json
from shared.io.errors import InputError

FIXED_SPACING = (1.0, 1.0, 1.0)  # the paper's "fixed" setting


def parse_spacing(spacing: str | Sequence[float]) -> tuple[str, list[float] | None]:
    """``"fixed"`` | ``"median"`` | ``"x,y,z"`` | a 3-list → ``(mode, explicit spacing or None)``."""
    if isinstance(spacing, str) and spacing in ("fixed", "median"):
        return spacing, (list(FIXED_SPACING) if spacing == "fixed" else None)
    try:
        values = [float(v) for v in (spacing.split(",") if isinstance(spacing, str) else spacing)]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or min(values) <= 0:
        raise InputError(None, f"spacing must be 'fixed', 'median' or three positive mm values x,y,z; got {spacing!r}")
    return "custom", values


def make_plan(fingerprint: dict[str, Any], datalist: dict[str, Any], datalist_path: str | os.PathLike, *,
              spacing: str | Sequence[float] = "fixed") -> dict[str, Any]:
    """Build the plan from a fingerprint (:func:`shared.data.fingerprint.fingerprint_cases`)."""
    mode, target = parse_spacing(spacing)
    if target is None:
        target = [float(v) for v in fingerprint["median_spacing"]]
    classes = class_names(datalist)
    return {"target_spacing": target, "spacing_mode": mode, "channels": fingerprint["channels"],
            "classes": classes, "num_classes": len(classes), "datalist": str(Path(datalist_path).resolve()),
            "datalist_sha256": sha256_file(datalist_path), "package_version": package_version()}


def plan_dataset(datalist: str | os.PathLike, plan_dir: str | os.PathLike, *,
                 spacing: str | Sequence[float] = "fixed", splits: Sequence[str] = ("training", "validation")
                 ) -> dict[str, Any]:
    """The plan of a datalist: reused from ``plan_dir/plans.json`` when current, else fingerprinted and written.

    Validates ``splits`` (and "training", which the fingerprint reads) first, so a bad entry is named
    before anything is written; every scan's grid at the target spacing is checked. Under ``torchrun``
    rank 0 plans and the other ranks wait, then read its plan.

    Args:
        datalist: datalist JSON (:mod:`shared.io.datalist`).
        plan_dir: where ``plans.json`` lives (the bundle's ``cache_dir``).
        spacing: "fixed" (1 mm isotropic), "median" (training median) or three mm values.
        splits: the splits that will be preprocessed with this plan.

    Raises:
        InputError: for any invalid entry, or a scan whose resampled grid would be empty or too large.
    """
    from shared.data.cache import PLAN_FILE, cache_lock, rank_zero_first, read_plan
    from shared.data.fingerprint import fingerprint_cases
    from shared.data.preprocess import check_resampled_sizes
    from shared.data.validate import validate_datalist

    parse_spacing(spacing)  # a bad request fails before the datalist is read
    with rank_zero_first():
        content, cases = validate_datalist(datalist, tuple(dict.fromkeys(("training", *splits))))
        with cache_lock(plan_dir):
            plan = read_plan(plan_dir)
            if plan_is_current(plan, datalist, spacing):
                check_resampled_sizes(cases, plan["target_spacing"])
            else:
                training = [case for case in cases if case.split == "training"]
                fingerprint = fingerprint_cases(training, content, source=os.fspath(datalist))
                plan = make_plan(fingerprint, content, datalist, spacing=spacing)
                check_resampled_sizes(cases, plan["target_spacing"])  # before anything is written
                write_json(Path(plan_dir) / PLAN_FILE, plan)
    return plan


def plan_is_current(plan: dict[str, Any] | None, datalist: str | os.PathLike, spacing: str | Sequence[float]) -> bool:
    """Whether ``plan`` was made from this very datalist file, for this spacing request, by this package version."""
    return (plan is not None and plan.get("datalist_sha256") == sha256_file(datalist)
            and plan.get("package_version") == package_version() and spacing_request_matches(plan, spacing))


def class_names(datalist: dict[str, Any]) -> list[str]:
    """The datalist's ``"classes"``, else ``"0".."C-1"`` with C one more than the largest label."""
    if datalist.get("classes"):
        return [str(name) for name in datalist["classes"]]
    largest = max((label for split in ("training", "validation", "test") for entry in datalist.get(split, [])
                   for label in entry.get("label", [])), default=0)
    return [str(index) for index in range(int(largest) + 1)]


def spacing_request_matches(plan: dict[str, Any], spacing: str | Sequence[float]) -> bool:
    """Whether an existing plan was made for this spacing request."""
    mode, target = parse_spacing(spacing)
    if plan.get("spacing_mode") != mode:
        return False
    return target is None or np.allclose(plan["target_spacing"], target)
