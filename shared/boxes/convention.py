"""The project's box conventions, stated once.

Inside the code a box is MONAI ``StandardMode`` (``x1, y1, z1, x2, y2, z2``), float, in voxel
coordinates of the array as it lies in memory (channel-first, spatial axes in MONAI order). A box from
an instance mask spans ``[min, max + 1)`` per axis in voxel *index* space, so a one-voxel object has
width 1 and its box edges sit on voxel borders.

Files hold boxes in world millimetres, mode ``cccwhd`` (centre x, y, z, then width, height, depth), in
the ITK/DICOM physical frame (LPS), the convention of LUNA16's CSVs, MONAI's LUNA16 datalists and its
lung-nodule bundle. Image affines in memory are MONAI's (RAS, as ``LoadImage`` gives them), so going to
the world frame flips the signs of x and y.

World coordinates locate voxel *centres* (the affine maps index ``i`` to the centre of voxel ``i``),
while index-space box edges sit on voxel borders; the half-voxel shift between the two is applied here
and nowhere else. We compute in float64 throughout: MONAI's ``apply_affine_to_boxes`` computes in float32,
which puts visible rounding (0.69999695 mm) into world coordinates of a few hundred millimetres, and its
``convert_box_mode`` rounds half-sizes to float32 on the way from ``cccwhd`` to corners.

Oblique and sheared scans: scans are never reoriented (preprocessing resamples along the scan's own
axes), so a box in memory is axis-aligned in the scan's voxel grid and a box in a file is axis-aligned
in the world; when the affine is oblique or sheared, neither is a box in the other frame. A conversion
gives the axis-aligned hull of all 8 transformed corners (MONAI's ``apply_affine_to_boxes`` transforms
only two opposite corners, which can collapse a rotated box to zero width). What is guaranteed:

* an affine whose direction is axis-aligned (any permutation and flips of the axes, any spacing) maps
  a box to exactly the same box, so the round trip is exact up to float rounding;
* otherwise the converted box *contains* the original one: an object inside the box stays inside. It
  is larger: each side becomes ``sum_j |M_ij| * side_j`` for the linear part ``M`` (voxel sides times
  spacing); a cube rotated by ``a`` in one plane grows by ``|cos a| + |sin a|`` along the two rotated
  axes (x1.16 at 10 degrees, x1.37 at 30, x1.41 at 45; up to x1.73 for a general 3-D rotation), and a
  round trip grows it twice (x2.0 at 45 degrees), so converting back and forth is not an identity.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.data.box_utils import CenterSizeMode, StandardMode

from shared.boxes.ops import cccwhd_to_xyzxyz, xyzxyz_to_cccwhd

BOX_MODE = StandardMode
FILE_BOX_MODE = CenterSizeMode
#: RAS (MONAI's in-memory affines) to LPS (ITK physical space, the frame of boxes in files).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_CORNER_BITS = np.array(list(np.ndindex(2, 2, 2)), dtype=bool)  # (8, 3): which edge of each axis


def empty_boxes(dtype=np.float32) -> np.ndarray:
    """The box array of an image with no object: shape (0, 6)."""
    return np.zeros((0, 6), dtype=dtype)


def boxes_from_instance_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box of every instance in a label map, ``[min, max + 1)`` per axis in voxel index space.

    Args:
        mask: integer instance map, 0 is background; a leading channel axis of size 1 is accepted.

    Returns:
        ``(boxes, instance_ids)``: boxes (N, 6) float32 xyzxyz voxel, ids (N,) int64, sorted by id.
    """
    mask = np.asarray(mask)
    if mask.ndim == 4 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 3:
        raise ValueError(f"an instance mask must be 3-D (optionally with one channel), got shape {mask.shape}")
    ids = np.unique(mask)
    ids = ids[ids != 0].astype(np.int64)
    boxes = empty_boxes()
    if len(ids):
        boxes = np.zeros((len(ids), 6), dtype=np.float32)
        objects = _find_objects(mask.astype(np.int64, copy=False), ids)
        for row, slices in enumerate(objects):
            boxes[row, :3] = [s.start for s in slices]
            boxes[row, 3:] = [s.stop for s in slices]
    return boxes, ids


def _find_objects(mask: np.ndarray, ids: np.ndarray) -> list[tuple[slice, ...]]:
    from scipy import ndimage

    found = ndimage.find_objects(mask, max_label=int(ids.max()))
    return [found[i - 1] for i in ids]


def world_affine(affine_ras: np.ndarray | torch.Tensor) -> np.ndarray:
    """The voxel-index → world (LPS mm) matrix of an image whose MONAI affine is ``affine_ras``."""
    return RAS_TO_LPS @ np.asarray(affine_ras, dtype=np.float64)


def is_axis_aligned(affine_ras: np.ndarray | torch.Tensor, *, tolerance: float = 1e-6) -> bool:
    """Whether the scan's axes are the world's in some order and direction, any spacing: then boxes convert
    exactly, else as enlarged hulls (module docstring).

    Args:
        affine_ras: (4, 4) MONAI affine.
        tolerance: an entry below ``tolerance`` times the largest of its column counts as zero, so the
            float32 noise of a stored NIfTI affine (about 1e-7) does not make a scan oblique.
    """
    linear = np.abs(np.asarray(affine_ras, dtype=np.float64)[:3, :3])
    significant = linear > tolerance * linear.max(axis=0, keepdims=True)
    return bool((significant.sum(axis=0) == 1).all() and (significant.sum(axis=1) == 1).all())


def boxes_voxel_to_world(boxes: np.ndarray | torch.Tensor, affine_ras: np.ndarray | torch.Tensor) -> np.ndarray:
    """Voxel xyzxyz boxes (index-space edges) → world-mm ``cccwhd`` boxes as written to files.

    On an oblique or sheared scan each world box is the axis-aligned hull of the voxel box's 8 corners:
    it contains the voxel box and is larger (module docstring).

    Args:
        boxes: (N, 6) StandardMode boxes in voxel index space.
        affine_ras: (4, 4) MONAI affine of the image the boxes live in.

    Returns:
        (N, 6) float64 ``cccwhd`` boxes in world (LPS) millimetres.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    if not len(boxes):
        return np.zeros((0, 6))
    centred = boxes - 0.5  # border at index edge → coordinate in the voxel-centre frame
    world = _transform_corners(centred, world_affine(affine_ras))
    return xyzxyz_to_cccwhd(world)


def boxes_world_to_voxel(boxes: np.ndarray | list, affine_ras: np.ndarray | torch.Tensor) -> np.ndarray:
    """World-mm ``cccwhd`` boxes from a file → voxel xyzxyz boxes (index-space edges).

    The inverse of :func:`boxes_voxel_to_world` when the scan's axes are aligned with the world's (in any
    order and direction); on an oblique or sheared scan the axis-aligned hull of the world box's 8
    corners, which contains it and is larger (module docstring).

    Args:
        boxes: (N, 6) ``cccwhd`` boxes in world (LPS) millimetres.
        affine_ras: (4, 4) MONAI affine of the image the boxes are wanted in.

    Returns:
        (N, 6) float32 StandardMode boxes in voxel index space.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    if not len(boxes):
        return empty_boxes()
    voxel = _transform_corners(cccwhd_to_xyzxyz(boxes), np.linalg.inv(world_affine(affine_ras)))
    return (voxel + 0.5).astype(np.float32)


def _transform_corners(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Axis-aligned hull of all 8 corners of each xyzxyz box (N, 6) after a (4, 4) affine, in float64."""
    # corner k takes the high edge along the axes whose bit is set; with an axis-aligned matrix each
    # output coordinate is one of the two edges' images, so the hull is exactly the transformed box
    corners = np.stack([np.where(bits, boxes[:, 3:], boxes[:, :3]) for bits in _CORNER_BITS], axis=1)
    moved = corners @ matrix[:3, :3].T + matrix[:3, 3]  # (N, 8, 3)
    return np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def points_world_to_voxel(points: np.ndarray, affine_ras: np.ndarray | torch.Tensor) -> np.ndarray:
    """World (LPS mm) points (N, 3) → continuous voxel-centre coordinates (N, 3)."""
    return _apply(np.linalg.inv(world_affine(affine_ras)), np.asarray(points, dtype=np.float64).reshape(-1, 3))


def points_voxel_to_world(points: np.ndarray, affine_ras: np.ndarray | torch.Tensor) -> np.ndarray:
    """Continuous voxel-centre coordinates (N, 3) → world (LPS mm) points (N, 3)."""
    return _apply(world_affine(affine_ras), np.asarray(points, dtype=np.float64).reshape(-1, 3))
