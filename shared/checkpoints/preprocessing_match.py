"""Whether fine-tuning sees its inputs the way pre-training did: spacing and intensity normalisation.

An encoder pre-trained at 1.5 mm and fine-tuned at 2 mm sees every structure at three quarters of the
size it learnt; one pre-trained on per-image z-scored CT and fine-tuned on CT normalised with the data
set's foreground statistics sees other intensities. Neither is an error (the paper fine-tunes CT with
nnDetection's CT normalisation after z-scored pre-training), but both change what the transferred
weights mean, so the transfer says so.

Normalisations are compared by kind: ``"CT"`` (clipped and z-scored with the data set's foreground
statistics, ``shared.data.normalize``; nnU-Net's ``CTNormalization``) or ``"per-image z-score"``
(every other modality, our pre-training, nnU-Net's ``ZScoreNormalization``). A manifest naming
something else, or nothing, is not compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CT = "CT"
PER_IMAGE = "per-image z-score"
DESCRIPTIONS = {CT: "CT (clipped and z-scored with the data set's foreground statistics)",
                PER_IMAGE: "per-image z-score"}
# relative spacing difference below which two spacings are the same (rounding in plans and manifests)
SPACING_TOLERANCE = 0.01


def preprocessing_differences(
    manifest: dict[str, Any],
    *,
    spacing: Sequence[float] | None,
    modalities: Sequence[str] | None,
) -> list[str]:
    """How fine-tuning's preprocessing differs from the pre-training the manifest records.

    Args:
        manifest: the pre-trained encoder's manifest (``spacing`` in mm, ``normalization``).
        spacing: the fine-tuning target spacing in mm, or ``None`` when not known yet (``"median"``).
        modalities: the fine-tuning channels' modalities (``"CT"`` or anything else), or ``None``.

    Returns:
        One line per difference; empty when they agree or cannot be compared.
    """
    differences = []
    pretrained_spacing = manifest.get("spacing")
    if spacing is not None and pretrained_spacing is not None:
        before, after = np.asarray(pretrained_spacing, float), np.asarray(spacing, float)
        if before.shape != after.shape or not np.allclose(before, after, rtol=SPACING_TOLERANCE, atol=0):
            differences.append(f"spacing: pre-trained at spacing {[float(v) for v in before]} mm, "
                               f"fine-tuned at {[float(v) for v in after]} mm")
    if modalities:
        before_kinds = normalization_kinds(manifest.get("normalization"), len(modalities))
        after_kinds = [CT if str(modality).upper() == CT else PER_IMAGE for modality in modalities]
        if before_kinds is not None and before_kinds != after_kinds:
            differences.append(f"normalisation: pre-trained with {_describe(before_kinds)}, "
                               f"fine-tuned with {_describe(after_kinds)}")
    return differences


def normalization_kinds(normalization: Any, num_channels: int) -> list[str] | None:
    """The kind of each channel's normalisation a manifest records; ``None`` when any is not recognised.

    Args:
        normalization: the manifest's ``normalization``: one description or scheme name for every
            channel, or one per channel.
        num_channels: the fine-tuning channel count (a single description is broadcast).

    Returns:
        ``"CT"`` or ``"per-image z-score"`` per channel, or ``None``.
    """
    if normalization is None:
        return None
    values = list(normalization) if isinstance(normalization, (list, tuple)) else [normalization] * num_channels
    kinds = [_kind(value) for value in values]
    return None if None in kinds or len(kinds) != num_channels else kinds


def _kind(value: Any) -> str | None:
    text = "".join(character for character in str(value).lower() if character.isalnum())
    if text.startswith("ct"):
        return CT
    if "zscore" in text:
        return PER_IMAGE
    return None


def _describe(kinds: list[str]) -> str:
    return ", ".join(DESCRIPTIONS[kind] for kind in dict.fromkeys(kinds))
