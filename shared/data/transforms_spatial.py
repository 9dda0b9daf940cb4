"""Spatial augmentation of a training patch, drawn before the patch is read and applied with it.

Each transform here only draws its part of one (3, 3) map from patch offsets to source offsets about the
patch centre and multiplies it into ``data["patch_matrix"]``; :class:`shared.data.transforms_sampling.
RandDetectionPatchd` then reads only the region of the volume the transformed patch covers and resamples
it in one interpolation, with the boxes and the instance map following (:mod:`shared.data.augment`).
That is nnU-Net's order and its speed: MONAI's ``RandFlipBoxd``/``RandZoomBoxd``/``RandRotateBox90d``
work on a whole image each, which for a CT volume means reading and interpolating all of it per
transform. List these before the patch transform; with none of them the patch is a plain crop.

Listed in the bundles' order (mirror, zoom, rotate), the matrices compose as
``source = rotation @ (mirror / scale) @ patch``: nnU-Net's order.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from monai.transforms import MapTransform, Randomizable

from shared.data.augment import rotation_matrix

#: the key holding the pending (3, 3) patch → source map
MATRIX_KEY = "patch_matrix"


class _PatchMatrixTransform(Randomizable, MapTransform):
    """Multiplies a drawn (3, 3) matrix into ``data[MATRIX_KEY]`` with probability ``prob``."""

    def __init__(self, prob: float):
        MapTransform.__init__(self, [MATRIX_KEY], allow_missing_keys=True)
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = float(prob)

    def randomize(self, data: Any = None) -> None:  # draws happen in draw_matrix, in a fixed order
        pass

    def draw_matrix(self, data: Mapping[Hashable, Any]) -> np.ndarray | None:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        data = dict(data)
        matrix = self.draw_matrix(data)
        if matrix is not None:
            data[MATRIX_KEY] = matrix @ np.asarray(data.get(MATRIX_KEY, np.eye(3)), dtype=np.float64)
        return data


class RandMirrorPatchd(_PatchMatrixTransform):
    """Mirror the patch along each array axis independently with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        super().__init__(prob)

    def draw_matrix(self, data: Mapping[Hashable, Any]) -> np.ndarray:
        return np.diag(np.where(self.R.random_sample(3) < self.prob, -1.0, 1.0))


class RandZoomPatchd(_PatchMatrixTransform):
    """With probability ``prob``, magnify the content by a factor drawn uniformly from ``zoom_range``."""

    def __init__(self, prob: float = 0.2, zoom_range: Sequence[float] = (0.7, 1.4)):
        super().__init__(prob)
        if len(zoom_range) != 2 or not 0 < zoom_range[0] <= zoom_range[1]:
            raise ValueError(f"zoom_range must be [low, high] with 0 < low <= high, got {list(zoom_range)}")
        self.zoom_range = [float(value) for value in zoom_range]

    def draw_matrix(self, data: Mapping[Hashable, Any]) -> np.ndarray | None:
        if self.R.random_sample() >= self.prob:
            return None
        return np.eye(3) / self.R.uniform(*self.zoom_range)


class RandRotatePatchd(_PatchMatrixTransform):
    """With probability ``prob``, rotate by one angle per axis drawn from ``[-degrees, degrees]``.

    Boxes-only cases are not rotated unless ``rotate_boxes_only_cases``: their boxes can only follow as
    the hull of the rotated corners, inflated by up to ``|cos a| + |sin a|`` per axis
    (:mod:`shared.data.augment`); with an instance map the boxes are recomputed exactly.

    Args:
        prob: probability per sample.
        degrees: the largest angle per array axis (one value for all three).
        rotate_boxes_only_cases: rotate cases without an instance map too.
        mask_key: the instance map key (absent or None for a boxes-only case).
    """

    def __init__(self, prob: float = 0.2, degrees: float | Sequence[float] = 30.0, *,
                 rotate_boxes_only_cases: bool = False, mask_key: str = "mask"):
        super().__init__(prob)
        degrees = [float(degrees)] * 3 if np.isscalar(degrees) else [float(value) for value in degrees]
        if len(degrees) != 3:
            raise ValueError(f"degrees needs one angle per axis, got {degrees}")
        self.degrees, self.rotate_boxes_only_cases, self.mask_key = degrees, bool(rotate_boxes_only_cases), mask_key

    def draw_matrix(self, data: Mapping[Hashable, Any]) -> np.ndarray | None:
        if data.get(self.mask_key) is None and not self.rotate_boxes_only_cases:
            return None
        if self.R.random_sample() >= self.prob:
            return None
        limits = np.radians(np.asarray(self.degrees))
        return rotation_matrix(self.R.uniform(-limits, limits))
