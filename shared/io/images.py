"""Scans in and out: one reader for NIfTI, MetaImage (.mhd), NRRD and DICOM series, with the checks
every later stage relies on (3-D, finite, one grid for all channels and the label map)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from monai.transforms import LoadImage

from shared.io.atomic import atomic_path
from shared.io.errors import InputError

_GRID_TOLERANCE = 1e-3  # mm; scanners round affines differently between series of one study


@dataclass
class Volume:
    """A loaded scan.

    Attributes:
        array: (C, X, Y, Z) float32, spatial axes in MONAI order.
        affine: (4, 4) float64 voxel-index → RAS-mm matrix (MONAI's convention).
        sources: the file (or DICOM folder) of each channel.
    """

    array: np.ndarray
    affine: np.ndarray
    sources: list[str]

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def load_volume(paths: str | os.PathLike | Sequence[str | os.PathLike], *, dtype=np.float32) -> Volume:
    """Read a scan given as one file or one file per channel; all channels must share one grid.

    Raises:
        InputError: naming the file, if it is missing, unreadable, not 3-D, holds NaN/Inf, or its grid
            differs from the first channel's.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not len(paths):
        raise InputError(None, "an image entry names no file")
    channels, affine = [], None
    for path in paths:
        array, channel_affine = _read_3d(path)
        if affine is not None:
            check_same_grid(path, array.shape, channel_affine, channels[0].shape, affine, what="first channel")
        channels.append(array.astype(dtype, copy=False))
        affine = channel_affine if affine is None else affine
    return Volume(np.stack(channels), affine, [os.fspath(p) for p in paths])


def load_label_map(path: str | os.PathLike, like: Volume | None = None) -> np.ndarray:
    """Read an integer instance map (X, Y, Z); with ``like``, insist on the image's grid."""
    array, affine = _read_3d(path)
    if not np.all(np.equal(np.mod(array, 1), 0)):
        raise InputError(path, "a label map must hold integer instance ids, found fractional values")
    if like is not None:
        check_same_grid(path, array.shape, affine, like.array.shape[1:], like.affine, what=f"image {like.sources[0]}")
    return array.astype(np.int32)


def check_same_grid(path, shape, affine, reference_shape, reference_affine, *, what: str) -> None:
    """Raise :class:`InputError` naming ``path`` when its shape or affine differ from the reference's."""
    if tuple(shape) != tuple(reference_shape):
        raise InputError(path, f"shape {tuple(shape)} differs from the {what}'s {tuple(reference_shape)}")
    if not np.allclose(affine, reference_affine, atol=_GRID_TOLERANCE):
        raise InputError(path, f"affine differs from the {what}'s:\n{np.round(affine, 4)}\nvs\n{np.round(reference_affine, 4)}")


def _read_3d(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        image = LoadImage(image_only=True)(str(path))
    except Exception as error:  # readers raise many types; the user needs the file and the reason
        raise InputError(path, f"cannot be read as an image ({type(error).__name__}: {error})") from error
    array = np.asarray(image)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(path, f"expected a 3-D scan, got {array.ndim}-D data of shape {array.shape}")
    if not np.isfinite(array).all():
        count = int((~np.isfinite(array)).sum())
        raise InputError(path, f"{count} voxels are NaN or infinite")
    return array, np.asarray(image.affine, dtype=np.float64)


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a 3-D array (X, Y, Z) with a RAS affine as NIfTI, atomically."""
    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    with atomic_path(path) as temporary:
        nib.save(image, temporary)
    return Path(path)
