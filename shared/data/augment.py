"""Training augmentation for detection patches, with boxes following the image.

Geometry (rotation, scaling, mirroring) is one affine map per sample from patch voxels to source voxels
(drawn by the transforms of :mod:`shared.data.transforms_spatial`),
applied by a single interpolation: only the region of the volume that the transformed patch covers is
read (nnU-Net's trick of working on a crop around the final patch), then ``affine_grid`` +
``grid_sample`` resample it straight into the patch, bilinear for the image and nearest for the instance
map. Without rotation or scaling the patch is an exact crop, flipped where mirrored.

Boxes: when a case has an instance map, the boxes are recomputed from the transformed map (exact). For
boxes-only cases the 8 corners are transformed and their axis-aligned hull taken; that is exact for
mirroring, scaling and 90-degree rotations, but a rotation by an angle ``a`` inflates a box by up to a
factor ``|cos a| + |sin a|`` per rotated axis (1.26 at 15 degrees, 1.37 at 30), so boxes-only cases are
not rotated by default (``rotate_boxes_only_cases`` of :class:`shared.data.transforms_spatial.RandRotatePatchd`).

Intensity augmentation is MONAI's transforms, listed after the patch in the bundle configs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from shared.data.sampling import IMAGE_PAD_VALUE, read_region


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """(3, 3) rotation by ``angles[k]`` radians about array axis ``k``, applied about axis 0 first."""
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        first, second = [a for a in range(3) if a != axis]
        turn = np.eye(3)
        turn[first, first] = turn[second, second] = math.cos(angle)
        turn[first, second], turn[second, first] = -math.sin(angle), math.sin(angle)
        matrix = turn @ matrix
    return matrix


def _is_signed_identity(matrix: np.ndarray) -> bool:
    return bool(np.array_equal(np.abs(matrix), np.eye(3)))


def extract_patch(
    image: np.ndarray,
    instance_map: np.ndarray | None,
    origin: np.ndarray,
    patch_size: tuple[int, int, int],
    matrix: np.ndarray | None = None,
) -> tuple[torch.Tensor, np.ndarray | None]:
    """The patch at ``origin``, transformed by ``matrix`` about its centre, in one interpolation.

    Args:
        image: (C, X, Y, Z) float array (a memory map is fine: only the covered region is read).
        instance_map: (X, Y, Z) integer map or ``None``.
        origin: (3,) int first voxel of the untransformed patch (may be negative: padding).
        patch_size: (PX, PY, PZ).
        matrix: (3, 3) patch offset → source offset (:mod:`shared.data.transforms_spatial`); ``None`` = identity.

    Returns:
        ``(image_patch, map_patch)``: (C, PX, PY, PZ) float32 tensor and (PX, PY, PZ) int64 array or ``None``.
        Outside the volume the image is ``IMAGE_PAD_VALUE`` and the map background.
    """
    origin = np.asarray(origin, dtype=np.int64)
    size = np.asarray(patch_size, dtype=np.int64)
    matrix = np.eye(3) if matrix is None else np.asarray(matrix, dtype=np.float64)
    if _is_signed_identity(matrix):
        return _mirrored_crop(image, instance_map, origin, size, np.diag(matrix) < 0)
    centre = origin + (size - 1) / 2.0
    half = (size - 1) / 2.0
    corners = np.array(np.meshgrid(*[(-h, h) for h in half], indexing="ij")).reshape(3, -1).T @ matrix.T
    start = np.floor(centre + corners.min(axis=0)).astype(np.int64)
    stop = np.floor(centre + corners.max(axis=0)).astype(np.int64) + 2
    theta = _grid_theta(matrix, centre - start, stop - start, size)
    grid = F.affine_grid(theta, [1, 1, *size.tolist()], align_corners=True)
    region = torch.from_numpy(read_region(image, start, stop, fill=IMAGE_PAD_VALUE).astype(np.float32, copy=False))
    image_patch = F.grid_sample(region[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    map_patch = None
    if instance_map is not None:
        map_region = read_region(instance_map, start, stop, fill=0)
        if not map_region.any():  # most random patches: skip the second interpolation
            map_patch = np.zeros(tuple(size), dtype=np.int64)
        else:
            map_region = torch.from_numpy(map_region.astype(np.float32))
            sampled = F.grid_sample(map_region[None, None], grid, mode="nearest", padding_mode="zeros", align_corners=True)
            map_patch = sampled[0, 0].round().numpy().astype(np.int64)
    return image_patch.contiguous(), map_patch


def _mirrored_crop(
    image: np.ndarray, instance_map: np.ndarray | None, origin: np.ndarray, size: np.ndarray, flipped: np.ndarray
) -> tuple[torch.Tensor, np.ndarray | None]:
    axes = tuple(int(a) for a in np.nonzero(flipped)[0])
    image_patch = read_region(image, origin, origin + size, fill=IMAGE_PAD_VALUE).astype(np.float32, copy=False)
    image_patch = np.ascontiguousarray(np.flip(image_patch, axis=tuple(a + 1 for a in axes)))
    map_patch = None
    if instance_map is not None:
        map_patch = read_region(instance_map, origin, origin + size, fill=0).astype(np.int64)
        map_patch = np.ascontiguousarray(np.flip(map_patch, axis=axes))
    return torch.from_numpy(image_patch), map_patch


def _grid_theta(matrix: np.ndarray, centre: np.ndarray, region_size: np.ndarray, patch_size: np.ndarray) -> torch.Tensor:
    """``affine_grid``'s (1, 3, 4) theta: normalised patch coordinates → normalised region coordinates.

    With ``align_corners=True`` index ``i`` of an axis of size ``n`` is ``2 i / (n - 1) - 1``; the grid's
    last dimension lists (Z, Y, X), the reverse of the array axes, hence the flips.
    """
    to_region = 2.0 / (region_size - 1)
    linear = to_region[:, None] * matrix * ((patch_size - 1) / 2.0)[None, :]
    shift = to_region * centre - 1.0
    theta = np.concatenate([linear[::-1, ::-1], shift[::-1, None]], axis=1)
    return torch.from_numpy(np.ascontiguousarray(theta, dtype=np.float32))[None]


def transform_boxes(
    boxes: np.ndarray, origin: np.ndarray, patch_size: tuple[int, int, int], matrix: np.ndarray | None = None
) -> np.ndarray:
    """Source voxel boxes → the patch's frame: axis-aligned hull of the 8 transformed corners (not clipped).

    Exact for mirroring, scaling and 90-degree rotations; inflated for other angles (module docstring).

    Args:
        boxes: (N, 6) xyzxyz voxel boxes of the volume.
        origin, patch_size, matrix: as given to :func:`extract_patch`.

    Returns:
        (N, 6) float64 boxes in patch voxel coordinates.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    matrix = np.eye(3) if matrix is None else np.asarray(matrix, dtype=np.float64)
    half = np.asarray(patch_size, dtype=np.float64) / 2.0
    # Edges in index space: the patch centre sits at origin + size / 2 in that frame.
    corners = np.stack([np.where(np.array(bits, dtype=bool), boxes[:, 3:], boxes[:, :3])
                        for bits in np.ndindex(2, 2, 2)], axis=1)
    patch_corners = (corners - np.asarray(origin) - half) @ np.linalg.inv(matrix).T + half
    return np.concatenate([patch_corners.min(axis=1), patch_corners.max(axis=1)], axis=1)
