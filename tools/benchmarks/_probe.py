"""What the probes (``learning_probe``, ``segmentation_probe``) share: reading ``--spacing`` and
``--patch_size`` the way the cache and the patch sampler take them."""

from __future__ import annotations

from collections.abc import Sequence

from shared.data.plan import parse_spacing


def spacing_and_patch(spacing: float | str | Sequence[float],
                      patch_size: int | str | Sequence[int]) -> tuple[str | list[float], list[int]]:
    """A probe's spacing and patch size, per axis.

    Args:
        spacing: mm, one number for every axis or three (``x,y,z``), or the plan's ``"fixed"`` /
            ``"median"``.
        patch_size: voxels, one number for every axis or three.

    Returns:
        ``(spacing, patch)``: spacing as :func:`shared.data.plan.parse_spacing` takes it (three floats, or
        ``"fixed"`` / ``"median"``), patch as three ints.

    Raises:
        InputError: for a spacing the plan refuses; ValueError: for a patch size that is not one or three
            positive ints.
    """
    if isinstance(spacing, (int, float)) or (isinstance(spacing, str) and _is_number(spacing)):
        spacing = [float(spacing)] * 3
    mode, values = parse_spacing(spacing)  # refuses what preprocessing would refuse, before any work
    patch = [patch_size] * 3 if isinstance(patch_size, (int, str)) else list(patch_size)
    try:
        patch = [int(size) for size in patch]
    except (TypeError, ValueError):
        patch = []
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch_size must be one or three positive voxel counts, got {patch_size!r}")
    return (mode if mode in ("fixed", "median") else values), patch


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
