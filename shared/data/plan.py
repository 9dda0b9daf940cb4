"""The preprocessing plan: the settings every cached case was made with, and their hash.

``plans.json`` (the cache contract): ``{"target_spacing": [sx, sy, sz] mm, "spacing_mode": "fixed" |
"median" | "custom", "channels": [{"modality", "clip", "mean", "std"}], "classes": [names],
"num_classes": C, "datalist": path, "version": 1, "hash": sha256}``. The hash covers the settings that
change the cached arrays (spacing, channels, classes, version), not where the datalist lies. One extra
key, ``"datalist_sha256"``, lets a rerun reuse the plan without fingerprinting again while the
datalist file is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shared.checkpoints.safe_load import sha256_file
from shared.io.errors import InputError

PLAN_VERSION = 1
FIXED_SPACING = (1.0, 1.0, 1.0)  # the paper's "fixed" setting
_HASHED = ("target_spacing", "spacing_mode", "channels", "classes", "num_classes", "version")


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
    plan = {"target_spacing": target, "spacing_mode": mode, "channels": fingerprint["channels"],
            "classes": classes, "num_classes": len(classes), "datalist": str(Path(datalist_path).resolve()),
            "version": PLAN_VERSION, "datalist_sha256": sha256_file(datalist_path)}
    plan["hash"] = plan_hash(plan)
    return plan


def plan_hash(plan: dict[str, Any]) -> str:
    """sha256 of the settings that determine the cached arrays (canonical JSON)."""
    settings = {key: plan[key] for key in _HASHED}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=_plain).encode()).hexdigest()


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


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot hash {type(value).__name__}")
