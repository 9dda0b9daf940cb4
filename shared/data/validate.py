"""Checking a datalist before anything is written, so a bad case stops a run at its start.

Per entry: every channel file readable, 3-D (at least :data:`shared.io.images.MIN_AXIS_VOXELS` voxels
along each axis), finite, with a regular affine, all channels on one grid, the same channel count in
every case, a label map on the image's grid whose every instance id has a box and a class, boxes inside
the image (half a voxel of tolerance), case ids unique, and no scan in two of the splits training,
validation and test (compared by resolved path, whether or not the split is checked). NIfTI files are
checked from their header plus the size of their voxel data (a truncated file is refused here, not
half-way through writing the cache): an uncompressed ``.nii`` by its file size, a ``.nii.gz`` by the
uncompressed size its gzip trailer records, decompressed in full only when that does not match (a
truncated or multi-member file). The voxel values are read only when stored as floats, the only case
where NaN/Inf can occur. Other formats are read whole through :func:`shared.io.images.load_volume`.

Boxes and mask ids: an entry with a ``"mask"`` may carry ``"instances"``, the mask id of each box row.
Without it, the box rows correspond one-to-one to the mask's nonzero ids in increasing order.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np

from shared.boxes.convention import boxes_world_to_voxel, is_axis_aligned
from shared.io.datalist import entry_boxes, read_datalist
from shared.io.errors import InputError
from shared.io.images import check_affine, check_same_grid, check_volume_shape, load_label_map, load_volume

_BOX_TOLERANCE = 0.5 + 1e-3  # voxels: a box edge may sit half a voxel outside the image
_MAX_INSTANCE_ID = 32767  # the cached instance map is int16
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", ".nhdr", ".gz")
_DISJOINT_SPLITS = ("training", "validation", "test")  # a scan in two of them leaks into the evaluation
_CHUNK = 1 << 24  # bytes per read when a .nii.gz must be decompressed to count its voxel data


@dataclass
class CheckedCase:
    """One datalist entry that passed validation.

    Attributes:
        case: case id (first channel's file name without extension and ``_0000`` suffix).
        split: the datalist split it came from.
        entry: the entry as :func:`shared.io.datalist.read_datalist` returns it (absolute paths).
        shape: (X, Y, Z) of the scan.
        affine: (4, 4) RAS affine of the scan.
        instances: mask id of each box row, or None when the entry has no mask.
    """

    case: str
    split: str
    entry: dict[str, Any]
    shape: tuple[int, int, int]
    affine: np.ndarray
    instances: list[int] | None


def case_id(image: str | Sequence[str]) -> str:
    """The one case id of a scan: names its cache files and its inference outputs.

    The first channel's file name without its extension (``.nii.gz``, ``.nii``, ``.mhd``, ``.mha``, ``.nrrd``,
    ``.nhdr``, ``.gz``; any case) and without a ``_0000`` channel suffix; a DICOM series folder keeps its
    whole name (``1.3.6.1...`` is a UID, not a stem and extensions).
    """
    name = Path(image if isinstance(image, (str, os.PathLike)) else image[0]).name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"_0000$", "", name)


def channel_paths(entry: dict[str, Any]) -> list[str]:
    image = entry["image"]
    return [image] if isinstance(image, (str, os.PathLike)) else list(image)


def validate_datalist(path: str | os.PathLike, splits: Sequence[str] = ("training", "validation"), *,
                      required: Sequence[str] = ("training",)) -> tuple[dict[str, Any], list[CheckedCase]]:
    """Check every entry of ``splits``; raise on the first problem.

    Args:
        path: the datalist JSON.
        splits: the splits to check (absent ones are skipped unless ``required``).
        required: splits that must hold at least one entry.

    Returns:
        ``(datalist, cases)``: the datalist as read (absolute paths) and one :class:`CheckedCase` per entry.

    Raises:
        InputError: naming the file (datalist, image or label map) and the problem.
    """
    datalist = read_datalist(path)
    for split in required:
        if not datalist.get(split):
            raise InputError(path, f"the '{split}' split is empty or missing")
    check_disjoint_splits(datalist)
    cases, seen, channels = [], {}, None
    classes = datalist.get("classes")
    for split in splits:
        for entry in datalist.get(split, []):
            if classes and any(label >= len(classes) for label in entry.get("label", [])):
                raise InputError(path, f"{channel_paths(entry)[0]}: labels {entry['label']} but 'classes' names "
                                       f"only {len(classes)} classes (0..{len(classes) - 1})")
            checked = check_entry(entry, split)
            if checked.case in seen:
                raise InputError(path, f"case id '{checked.case}' appears twice ({seen[checked.case]} and "
                                       f"{channel_paths(entry)[0]}); case ids are file names without extension")
            count = len(channel_paths(entry))
            if channels is not None and count != channels:
                raise InputError(channel_paths(entry)[0], f"has {count} channels, other cases have {channels}")
            seen[checked.case], channels = channel_paths(entry)[0], count
            cases.append(checked)
    return datalist, cases


def check_disjoint_splits(datalist: dict[str, Any]) -> None:
    """Raise :class:`InputError` naming the file when a scan (any channel, by resolved path) is listed in
    two of the splits training, validation and test."""
    first_split: dict[str, str] = {}
    for split in _DISJOINT_SPLITS:
        for entry in datalist.get(split, []):
            for path in channel_paths(entry):
                resolved = os.path.realpath(path)
                other = first_split.setdefault(resolved, split)
                if other != split:
                    raise InputError(path, f"is in both the '{other}' and the '{split}' split; a scan may be in "
                                           "one of training, validation and test only")


def check_entry(entry: dict[str, Any], split: str) -> CheckedCase:
    """Check one datalist entry (images, label map, boxes); see the module docstring."""
    paths = channel_paths(entry)
    shape, affine = image_grid(paths[0])
    for path in paths[1:]:
        check_same_grid(path, *image_grid(path), shape, affine, what=f"first channel {paths[0]}")
    boxes, _ = entry_boxes(entry)
    voxel = boxes_world_to_voxel(boxes, affine)
    upper = np.asarray(shape, dtype=np.float64) + _BOX_TOLERANCE
    # on an oblique scan the voxel box is the enlarged hull of the world box and may stick out of the grid
    # around an object inside it; there only its centre (exact) must lie in the image
    extent = voxel if is_axis_aligned(affine) else np.tile((voxel[:, :3] + voxel[:, 3:]) / 2, 2)
    outside = np.flatnonzero((extent[:, :3] < -_BOX_TOLERANCE).any(axis=1) | (extent[:, 3:] > upper).any(axis=1))
    if len(outside):
        row = int(outside[0])
        raise InputError(paths[0], f"box {row} {np.round(boxes[row], 2).tolist()} (world mm, cccwhd) lies outside "
                                   f"the image of shape {shape}; in voxels it is {np.round(voxel[row], 2).tolist()}")
    instances = None
    if entry.get("mask"):
        instances = instance_ids(entry, mask_ids_on_grid(entry["mask"], shape, affine), len(boxes))
    case = case_id(paths[0])
    if not case:
        raise InputError(paths[0], "the file name is only an extension, so the case has no id; rename the file")
    return CheckedCase(case, split, entry, shape, affine, instances)


def instance_ids(entry: dict[str, Any], mask_ids: Sequence[int], box_count: int) -> list[int]:
    """The mask id of each box row, checked against the ids present in the mask (see module docstring)."""
    source = entry["mask"]
    present = sorted(int(i) for i in mask_ids)
    if "instances" in entry and entry["instances"] is not None:
        given = [int(i) for i in entry["instances"]]
        if len(given) != box_count:
            raise InputError(source, f"'instances' lists {len(given)} ids for {box_count} boxes")
        if len(set(given)) != len(given):
            raise InputError(source, f"'instances' repeats an id: {given}")
        missing, absent = sorted(set(present) - set(given)), sorted(set(given) - set(present))
        if absent:
            raise InputError(source, f"instance ids {absent} of 'instances' do not occur in the mask")
        if missing:
            raise InputError(source, f"instance ids {missing} in the mask have no box/class entry")
        return given
    if len(present) != box_count:
        raise InputError(source, f"the mask holds {len(present)} instances {present[:20]} but the entry has "
                                 f"{box_count} boxes/classes; every instance id needs a box and a class "
                                 "(add 'instances' to map box rows to mask ids)")
    return present


def mask_ids_on_grid(path: str, shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """Nonzero ids of a label map after checking it is integer, in range and on the image's grid."""
    if _is_nifti(path):
        image = _nifti(path)
        check_same_grid(path, _spatial_shape(path, image.shape), image.affine, shape, affine, what="image")
        _check_payload_size(path, image)
        try:
            array = np.asanyarray(image.dataobj).reshape(tuple(shape))
        except Exception as error:  # damaged beyond what the size check sees
            raise InputError(path, f"voxel data cannot be read ({type(error).__name__}: {error})") from error
        if not np.issubdtype(array.dtype, np.integer) and not np.all(np.mod(array, 1) == 0):
            raise InputError(path, "a label map must hold integer instance ids, found fractional values")
    else:
        array = load_label_map(path)
        check_same_grid(path, array.shape, load_volume(path).affine, shape, affine, what="image")
    ids = np.unique(array)
    ids = ids[ids != 0]
    if len(ids) and (ids.min() < 0 or ids.max() > _MAX_INSTANCE_ID):
        raise InputError(path, f"instance ids must lie in 1..{_MAX_INSTANCE_ID}, "
                               f"found {int(ids.min())}..{int(ids.max())}")
    return ids.astype(np.int64)


def image_grid(path: str) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, affine)`` of one channel file, checked readable, 3-D and finite."""
    if not _is_nifti(path):
        volume = load_volume(path)
        return tuple(volume.array.shape[1:]), volume.affine
    image = _nifti(path)
    shape = _spatial_shape(path, image.shape)
    check_volume_shape(path, shape)
    check_affine(path, image.affine)
    _check_payload_size(path, image)
    if np.issubdtype(image.header.get_data_dtype(), np.floating) or not np.isfinite(image.dataobj.slope):
        try:
            data = np.asanyarray(image.dataobj)
        except Exception as error:  # a truncated or corrupt payload
            raise InputError(path, f"voxel data cannot be read ({type(error).__name__}: {error})") from error
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise InputError(path, f"{bad} voxels are NaN or infinite")
    return shape, np.asarray(image.affine, dtype=np.float64)


def _check_payload_size(path: str, image) -> None:
    """Refuse a NIfTI file whose voxel data are shorter than its header declares (a truncated copy)."""
    header = image.header
    expected = int(header.get_data_offset()) + int(np.prod(image.shape)) * header.get_data_dtype().itemsize
    if str(path).lower().endswith(".nii"):
        found = os.path.getsize(path)
    else:
        found = _gzip_size(path, expected)
    if found < expected:
        raise InputError(path, f"truncated: its header declares {expected} bytes of header and voxel data but the "
                               f"file holds {found}; copy or export it again")


def _gzip_size(path: str, expected: int) -> int:
    """Uncompressed size of a gzip file: its trailer's when that matches ``expected`` (the usual, cheap
    case), else counted by decompressing (a truncated stream ends early; multi-member files are counted
    whole)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() >= 4:
            handle.seek(-4, os.SEEK_END)
            if int.from_bytes(handle.read(4), "little") == expected % 2**32:
                return expected
    found = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                found += len(chunk)
    except (EOFError, OSError, zlib.error):
        pass  # what was read before the damage is what the file holds
    return found


def _spatial_shape(path: str, shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(path, f"expected a 3-D scan, got {len(shape)}-D data of shape {tuple(shape)}")
    return tuple(int(s) for s in shape)


def _nifti(path: str):
    if not Path(path).exists():
        raise InputError(path, "file not found")
    try:
        return nib.load(path)
    except Exception as error:  # nibabel raises many types for damaged files
        raise InputError(path, f"cannot be read as NIfTI ({type(error).__name__}: {error})") from error


def _is_nifti(path: str) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))
