"""Where voxels and boxes lie, as dictionary transforms: boxes world ↔ voxel, and resampling to the
plan's spacing with the boxes and the instance map following.

Both are thin wrappers: :mod:`shared.boxes.convention` is the one place for the box convention (world
``cccwhd`` mm ↔ voxel xyzxyz, the axis-aligned hull of the 8 corners on oblique scans), and
:mod:`shared.data.resample` the one place for the resampling geometry (the grid's outer corner stays,
so a voxel box scales by exactly the zoom factor). MONAI's ``Spacingd`` keeps the first voxel's centre
instead, which would move every box by half a voxel against that convention; hence these.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from monai.transforms import MapTransform

from shared.boxes.convention import boxes_voxel_to_world, boxes_world_to_voxel
from shared.data.resample import (boxes_after_resampling, needs_resampling, resample_image, resample_instance_map,
                                  resampled_affine, resampled_shape, spacing_of, zoom_factors)
from shared.io.errors import InputError


class BoxesWorldToVoxeld(MapTransform):
    """World boxes (N, 6) ``cccwhd`` mm → voxel xyzxyz boxes of the image whose affine is ``affine_key``.

    Args:
        keys: the box key(s); missing keys are skipped by default (a scan without annotations).
        affine_key: the (4, 4) RAS affine of the image (:class:`shared.data.transforms_io.LoadVolumed`).
    """

    def __init__(self, keys: Sequence[str] | str = "boxes", affine_key: str = "affine", *,
                 allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)
        self.affine_key = affine_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        data = dict(data)
        for key in self.key_iterator(data):
            data[key] = boxes_world_to_voxel(np.asarray(data[key], dtype=np.float64).reshape(-1, 6),
                                             data[self.affine_key])
        return data


class BoxesVoxelToWorldd(MapTransform):
    """Voxel xyzxyz boxes → world ``cccwhd`` mm boxes (the files' convention), for predictions.

    Args:
        keys: the box key(s).
        affine_key: the (4, 4) RAS affine of the grid the boxes are on (the preprocessed one).
    """

    def __init__(self, keys: Sequence[str] | str = "boxes", affine_key: str = "affine", *,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.affine_key = affine_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        data = dict(data)
        for key in self.key_iterator(data):
            boxes = data[key]
            boxes = boxes.detach().cpu().numpy() if hasattr(boxes, "detach") else np.asarray(boxes)
            affine = data[self.affine_key]
            data[key] = boxes_voxel_to_world(boxes, np.asarray(affine.cpu() if hasattr(affine, "cpu") else affine))
        return data


class ResampleToSpacingd(MapTransform):
    """Resample the scan (trilinear), its instance map (nearest) and its voxel boxes to ``pixdim`` mm.

    Boxes of objects that survive in the resampled instance map are read from it; the others, and every
    box of a boxes-only case, are scaled (:func:`shared.data.resample.boxes_after_resampling`). A scan
    already at ``pixdim`` keeps its voxels (its boxes are still read from its instance map, if any).

    Args:
        pixdim: target spacing (3,) in mm per array axis (the plan's ``target_spacing``).
        image_key, mask_key, box_key, affine_key: the keys; a missing mask or boxes is skipped.
        instances_key: the mask id of each box row (needed with a mask).
    """

    def __init__(self, pixdim: Sequence[float], *, image_key: str = "image", mask_key: str = "mask",
                 box_key: str = "boxes", affine_key: str = "affine", instances_key: str = "instances"):
        super().__init__([image_key], allow_missing_keys=False)
        if len(pixdim) != 3 or min(float(value) for value in pixdim) <= 0:
            raise ValueError(f"pixdim must be three positive spacings in mm, got {list(pixdim)}")
        self.pixdim = [float(value) for value in pixdim]
        self.image_key, self.mask_key, self.box_key = image_key, mask_key, box_key
        self.affine_key, self.instances_key = affine_key, instances_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        data = dict(data)
        image, affine = data[self.image_key], np.asarray(data[self.affine_key], dtype=np.float64)
        resampling = needs_resampling(spacing_of(affine), self.pixdim)
        factors = zoom_factors(spacing_of(affine), self.pixdim) if resampling else np.ones(3)
        mask = data.get(self.mask_key)
        if resampling:
            try:
                resampled_shape(image.shape[1:], factors)  # checked before the (possibly huge) allocation
            except ValueError as error:
                sources = data.get("sources") or ["a scan"]
                raise InputError(sources[0], f"{error}; check the voxel spacing in its header") from None
            data[self.image_key] = resample_image(image, factors)
            data[self.affine_key] = resampled_affine(affine, factors)
            if mask is not None:
                mask = data[self.mask_key] = resample_instance_map(mask, factors)
        # with a mask the boxes are the mask's, on the original grid too (tight to the voxels)
        if data.get(self.box_key) is not None and (resampling or mask is not None):
            data[self.box_key] = boxes_after_resampling(data[self.box_key], factors, mask=mask,
                                                        instances=data.get(self.instances_key))
        return data
