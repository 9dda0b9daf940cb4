"""The detector bundles' default transform chains, built in Python for code that runs without a bundle
config (``tools.preprocess``, the benchmarks and probes). A test keeps them equal, transform by
transform, to the chains ``bundles/retina_unet_detection/configs/train.json`` builds, so the bundle JSON
stays the place to read and change them.
"""

from __future__ import annotations

from typing import Any, Sequence

from monai.transforms import (Compose, RandAdjustContrastd, RandGaussianNoised, RandGaussianSmoothd,
                              RandScaleIntensityd, RandScaleIntensityFixedMeand)

from shared.data.transforms_geometry import BoxesWorldToVoxeld, ResampleToSpacingd
from shared.data.transforms_intensity import NormalizeChannelsd
from shared.data.transforms_io import LoadLabelMapd, LoadVolumed
from shared.data.transforms_sampling import RandDetectionPatchd
from shared.data.transforms_spatial import RandMirrorPatchd, RandRotatePatchd, RandZoomPatchd


def preprocessing_chain(plan: dict[str, Any]) -> Compose:
    """Load, boxes world → voxel, resample to the plan's spacing, normalise with its statistics."""
    return Compose([LoadVolumed("image"), LoadLabelMapd("mask"), BoxesWorldToVoxeld("boxes"),
                    ResampleToSpacingd(plan["target_spacing"]), NormalizeChannelsd("image", plan["channels"])])


def pretraining_chain(plan: dict[str, Any]) -> Compose:
    """The pre-training bundle's ``preprocessing``: load, resample, z-score per image (images only)."""
    return Compose([LoadVolumed("image"), ResampleToSpacingd(plan["target_spacing"]),
                    NormalizeChannelsd("image", plan["channels"])])


def spatial_augmentation() -> list:
    """Mirroring, zoom and rotation of the patch (nnU-Net's probabilities), applied with the crop."""
    return [RandMirrorPatchd(prob=0.5), RandZoomPatchd(prob=0.2, zoom_range=[0.7, 1.4]),
            RandRotatePatchd(prob=0.2, degrees=30.0)]


def intensity_augmentation() -> list:
    """Noise, blur, brightness, contrast and gamma (nnU-Net's probabilities and ranges) as MONAI transforms."""
    return [RandGaussianNoised("image", prob=0.1, std=0.316, sample_std=True),
            RandGaussianSmoothd("image", prob=0.2, sigma_x=[0.5, 1.0], sigma_y=[0.5, 1.0], sigma_z=[0.5, 1.0]),
            RandScaleIntensityd("image", prob=0.15, factors=[-0.25, 0.25]),
            RandScaleIntensityFixedMeand("image", prob=0.15, factors=[-0.25, 0.25], fixed_mean=True,
                                         preserve_range=True),
            RandAdjustContrastd("image", prob=0.3, gamma=[0.7, 1.5], retain_stats=True)]


def training_chain(patch_size: int | Sequence[int], *, batch_size: int, foreground_fraction: float = 0.5,
                   augment: bool = True) -> Compose:
    """``train#preprocessing``: spatial augmentation, the patch, intensity augmentation (none without ``augment``)."""
    patch = RandDetectionPatchd(patch_size, batch_size=batch_size, foreground_fraction=foreground_fraction)
    if not augment:
        return Compose([patch])
    return Compose([*spatial_augmentation(), patch, *intensity_augmentation()])
