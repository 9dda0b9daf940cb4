"""The training patch as a dictionary transform: foreground oversampling (:mod:`shared.data.sampling`),
the pending spatial augmentation applied in the same read (:mod:`shared.data.transforms_spatial`), and
the boxes, classes and segmentation target following.

Input: a cached case as :class:`shared.data.dataset.DetectionPatchDataset` hands it over (``image``
(C, X, Y, Z) memory map, ``mask`` (X, Y, Z) or None, ``boxes`` (N, 6) xyzxyz voxel, ``labels``,
``instances``, ``batch_position``). Output: the training sample (``image`` (C, PX, PY, PZ) float32
tensor, ``boxes`` (M, 6) float32 xyzxyz voxel in the patch, ``labels`` (M,) int64, ``seg``
(1, PX, PY, PZ) int64 with 0 background and class + 1, ``foreground``, ``case``); the volume-sized
keys are dropped so that only the patch travels to the training process.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable

from shared.boxes.rasterize import rasterize_boxes
from shared.data.augment import extract_patch, transform_boxes
from shared.data.rasterize import rasterize_instances
from shared.data.sampling import boxes_of_patch_instances, choose_patch_origin, crop_boxes, is_foreground_sample
from shared.data.transforms_spatial import MATRIX_KEY
from shared.io.errors import InputError

#: keys of the case that stay behind (volume-sized, or consumed here)
_DROPPED = ("mask", "instances", MATRIX_KEY, "batch_position", "source")


def patch_size_of(value: int | Sequence[int]) -> tuple[int, int, int]:
    """(PX, PY, PZ) from one int (a cube) or three; each at least 2 voxels."""
    size = (int(value),) * 3 if np.isscalar(value) else tuple(int(v) for v in value)
    if len(size) != 3 or min(size) < 2:
        raise ValueError(f"patch_size must be 3 sizes of at least 2 voxels, got {value!r}")
    return size


def sample_detection_patch(data: Mapping[Hashable, Any], patch_size: tuple[int, int, int], rng: np.random.Generator,
                           *, foreground: bool, min_visible_fraction: float = 0.5) -> dict[str, Any]:
    """One patch of a case with its boxes, classes and segmentation target (module docstring)."""
    image, instance_map, matrix = data["image"], data.get("mask"), data.get(MATRIX_KEY)
    case_boxes = np.asarray(data.get("boxes", np.zeros((0, 6))), dtype=np.float32).reshape(-1, 6)
    case_labels = np.asarray(data.get("labels", np.zeros(0)), dtype=np.int64).reshape(-1)
    origin = choose_patch_origin(tuple(image.shape[1:]), patch_size, rng, boxes=case_boxes if foreground else None,
                                 matrix=matrix)
    image_patch, map_patch = extract_patch(image, instance_map, origin, patch_size, matrix)
    if map_patch is not None:
        try:
            boxes, labels, ids = boxes_of_patch_instances(map_patch, data.get("instances"), case_labels)
        except KeyError as missing:
            problem = f"instance ids {missing.args[0]} of the mask are not in 'instances'"
            raise InputError(data.get("source"), problem) from None
        seg = rasterize_instances(map_patch, ids, labels)
    else:
        moved = transform_boxes(case_boxes, origin, patch_size, matrix)
        boxes, labels = crop_boxes(moved, case_labels, patch_size, min_visible_fraction=min_visible_fraction)
        seg = rasterize_boxes(boxes, patch_size, ids=np.asarray(labels) + 1, dtype=np.int64)
    return {
        "image": image_patch.to(torch.float32).contiguous(),
        "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
        "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        "seg": torch.from_numpy(seg[None].astype(np.int64, copy=False)),
    }


class RandDetectionPatchd(Randomizable, MapTransform):
    """A training patch with foreground oversampling (see :mod:`shared.data.sampling` for the rule).

    Of each batch of ``batch_size`` samples the last ``floor(foreground_fraction * batch_size)`` are
    centred on a random object (a random point of its box lands in the central half of the patch), the
    one before them with the remaining probability; the position comes from ``data["batch_position"]``
    (0 when absent). Cases without objects always give a uniformly random patch.

    Args:
        patch_size: (PX, PY, PZ) or one int for a cube.
        batch_size: samples per batch (the rule needs it).
        foreground_fraction: expected share of object-centred patches, 0..1.
        min_visible_fraction: boxes-only cases keep a box with at least this share inside the patch.
    """

    def __init__(self, patch_size: int | Sequence[int], *, batch_size: int, foreground_fraction: float = 0.5,
                 min_visible_fraction: float = 0.5):
        MapTransform.__init__(self, ["image"])
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0.0 <= float(foreground_fraction) <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        self.patch_size, self.batch_size = patch_size_of(patch_size), int(batch_size)
        self.foreground_fraction, self.min_visible_fraction = float(foreground_fraction), float(min_visible_fraction)

    def randomize(self, data: Any = None) -> None:  # one generator per call, drawn from self.R in __call__
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        rng = np.random.default_rng(self.R.randint(2**31 - 1))
        position = int(data.get("batch_position", 0))
        foreground = is_foreground_sample(position % self.batch_size, self.batch_size, self.foreground_fraction, rng)
        sample = {key: value for key, value in data.items() if key not in _DROPPED}
        sample.update(sample_detection_patch(data, self.patch_size, rng, foreground=foreground,
                                             min_visible_fraction=self.min_visible_fraction))
        sample["foreground"] = foreground
        return sample
