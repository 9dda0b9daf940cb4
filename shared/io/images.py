"""Scans in and out: one reader for NIfTI, MetaImage (.mhd), NRRD and DICOM series, with the checks
every later stage relies on (3-D, finite, one grid for all channels and the label map)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from monai.data.utils import correct_nifti_header_if_necessary
from monai.transforms import LoadImage

from shared.io.atomic import atomic_path
from shared.io.errors import InputError

_GRID_TOLERANCE = 1e-3  # mm; scanners round affines differently between series of one study
#: fewer voxels than this along an axis is not a volume (a single 2-D slice loads as X x Y x 1)
MIN_AXIS_VOXELS = 4
_MIN_VOXEL_VOLUME = 1e-9  # mm^3; a smaller |det| means a zero or singular affine, not a tiny voxel


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
        InputError: naming the file, if it is missing, unreadable, not 3-D, has fewer than
            :data:`MIN_AXIS_VOXELS` voxels along an axis, holds NaN/Inf, has a zero or singular affine,
            or its grid differs from the first channel's.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not len(paths):
        raise InputError(None, "an image entry names no file")
    channels, affine = [], None
    for path in paths:
        array, channel_affine = _read_3d(path)
        check_volume_shape(path, array.shape)
        if affine is not None:
            check_same_grid(path, array.shape, channel_affine, channels[0].shape, affine, what="first channel")
        channels.append(np.ascontiguousarray(array, dtype=dtype))  # NIfTI stores Fortran order
        affine = channel_affine if affine is None else affine
    # One channel: a view with a channel axis, not a stacked copy of a scan that may be gigabytes.
    array = channels[0][None] if len(channels) == 1 else np.stack(channels)
    return Volume(array, affine, [os.fspath(p) for p in paths])


def load_label_map(path: str | os.PathLike, like: Volume | None = None) -> np.ndarray:
    """Read an integer instance map (X, Y, Z); with ``like``, insist on the image's grid."""
    array, affine = _read_3d(path)
    if not np.all(np.equal(np.mod(array, 1), 0)):
        raise InputError(path, "a label map must hold integer instance ids, found fractional values")
    if like is not None:
        check_same_grid(path, array.shape, affine, like.array.shape[1:], like.affine,
                        what=f"image {like.sources[0]}")
    return np.ascontiguousarray(array, dtype=np.int32)


def check_volume_shape(path, shape) -> None:
    """Raise :class:`InputError` naming ``path`` when an axis has fewer than :data:`MIN_AXIS_VOXELS` voxels."""
    if min(shape) < MIN_AXIS_VOXELS:
        raise InputError(path, f"shape {tuple(int(s) for s in shape)} has fewer than {MIN_AXIS_VOXELS} voxels along an "
                               "axis: a 2-D slice or a thin slab, not a 3-D scan")


def check_affine(path, affine) -> None:
    """Raise :class:`InputError` naming ``path`` when its voxel-to-world affine is not finite or is singular
    (a zero voxel size or collinear axes in the header: no world position, box or spacing can be computed)."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < _MIN_VOXEL_VOLUME:
        raise InputError(path, f"the voxel-to-world affine is zero, singular or not finite "
                               f"(spacing {np.round(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)), 6).tolist()} mm); "
                               "fix the header's spacing and orientation")


def check_same_grid(path, shape, affine, reference_shape, reference_affine, *, what: str) -> None:
    """Raise :class:`InputError` naming ``path`` when its shape or affine differ from the reference's."""
    if tuple(shape) != tuple(reference_shape):
        raise InputError(path, f"shape {tuple(shape)} differs from the {what}'s {tuple(reference_shape)}")
    if not np.allclose(affine, reference_affine, atol=_GRID_TOLERANCE):
        raise InputError(path, f"affine differs from the {what}'s:\n{np.round(affine, 4)}\n"
                               f"vs\n{np.round(reference_affine, 4)}")


def _read_3d(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        array, affine = _read_nifti(path) if _is_nifti(path) else _read_with_monai(path)
    except Exception as error:  # readers raise many types; the user needs the file and the reason
        raise InputError(path, f"cannot be read as an image ({type(error).__name__}: {error})") from error
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(path, f"expected a 3-D scan, got {array.ndim}-D data of shape {array.shape}")
    check_affine(path, affine)
    if array.dtype.kind == "f" and not np.isfinite(array).all():  # integers cannot hold NaN/Inf
        count = int((~np.isfinite(array)).sum())
        raise InputError(path, f"{count} voxels are NaN or infinite")
    return array, affine


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".nii", ".nii.gz"))


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """NIfTI straight through nibabel, as MONAI's NibabelReader reads it (stored axis order, no
    reorientation, scaling applied, its sform/qform repair), without LoadImage's float32 and tensor copies."""
    image = nib.load(path, mmap=False)  # in memory, like LoadImage: no open file behind the array
    image = correct_nifti_header_if_necessary(image)  # header only: picks the form that matches pixdim
    return np.asanyarray(image.dataobj), np.array(image.affine, dtype=np.float64)


def _read_with_monai(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = LoadImage(image_only=True)(str(path))
    return np.asarray(image), np.asarray(image.affine, dtype=np.float64)


def dicom_series_uid(path: str | os.PathLike) -> str | None:
    """The SeriesInstanceUID (0020,000E) of a DICOM series folder or ``.dcm`` file, None for other images.

    LUNA16 names a scan by this UID; a folder's name is whatever the export chose. Read from the first
    file GDCM can read (all slices of a series carry the same UID).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(item for item in path.iterdir() if item.is_file() and not item.name.startswith("."))
    elif path.is_file() and path.suffix.lower() == ".dcm":
        files = [path]
    else:
        return None
    import itk  # heavy, and needed only for DICOM (as by MONAI's ITKReader)

    for file in files:
        reader = itk.GDCMImageIO.New()
        if not reader.CanReadFile(str(file)):
            continue
        reader.SetFileName(str(file))
        reader.ReadImageInformation()
        found, uid = reader.GetValueFromTag("0020|000e", "")
        uid = uid.strip().rstrip("\x00") if found else ""
        if uid:
            return uid
    return None


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a 3-D array (X, Y, Z) with a RAS affine as NIfTI, atomically."""
    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    with atomic_path(path) as temporary:
        nib.save(image, temporary)
    return Path(path)
