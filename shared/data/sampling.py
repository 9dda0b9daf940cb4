"""Where a training patch comes from: foreground oversampling, padded reads, boxes cropped to the patch.

Foreground oversampling follows nnU-Net/nnDetection's per-batch rule, made exact for any batch size:
of a batch of ``B`` samples the last ``floor(fraction * B)`` are foreground samples, and the sample just
before them is one with probability ``fraction * B - floor(fraction * B)``. So the expected share is
``fraction`` for every ``B`` (a batch of 1 with fraction 0.5 is foreground half the time, where
nnU-Net's rounding would make it always foreground), and the count per batch is exact when
``fraction * B`` is whole. A foreground patch is placed around a random object: a random point of the
object's box lands at a random position in the central half of the patch, so objects are seen off-centre
too. Other patches are uniformly random. A case without objects always gives a random patch.

Volumes smaller than the patch are padded with 0, which after z-score normalisation is the data set's
mean intensity (nnU-Net and nnDetection do the same); the instance map is padded with background.
"""

from __future__ import annotations

import math

import numpy as np

from shared.boxes.convention import boxes_from_instance_mask, empty_boxes

#: Value that fills image voxels outside the volume (normalised intensities: the mean).
IMAGE_PAD_VALUE = 0.0


def is_foreground_sample(position: int, batch_size: int, fraction: float, rng: np.random.Generator) -> bool:
    """Whether the sample at ``position`` of a batch is centred on an object (see module docstring).

    Args:
        position: index of the sample in its batch, 0..batch_size-1.
        batch_size: samples per batch.
        fraction: expected share of foreground samples, 0..1.
        rng: draws the one sample whose fate is random; always consumed once, so the rest of the
            sample's randomness does not depend on the position.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"foreground_fraction must be in [0, 1], got {fraction}")
    draw = rng.random()
    expected = fraction * batch_size
    certain = math.floor(expected + 1e-9)
    if position >= batch_size - certain:
        return True
    return position == batch_size - certain - 1 and draw < expected - certain


def origin_range(shape: tuple[int, ...], patch_size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest patch origin per axis: inside the volume, or the volume inside the patch.

    Returns:
        ``(low, high)``, (3,) int64 each, inclusive.
    """
    difference = np.asarray(shape, dtype=np.int64) - np.asarray(patch_size, dtype=np.int64)
    return np.minimum(difference, 0), np.maximum(difference, 0)


def choose_patch_origin(
    shape: tuple[int, ...],
    patch_size: tuple[int, ...],
    rng: np.random.Generator,
    *,
    boxes: np.ndarray | None = None,
    matrix: np.ndarray | None = None,
) -> np.ndarray:
    """Origin (first voxel, may be negative) of a patch: around a random box if ``boxes`` has any, else uniform.

    Args:
        shape: (X, Y, Z) of the volume.
        patch_size: (PX, PY, PZ).
        rng: the sample's generator.
        boxes: (N, 6) xyzxyz voxel boxes to centre on; ``None`` or empty for a random patch.
        matrix: (3, 3) patch offset → source offset of the augmentation that will be applied about the
            patch centre (see :mod:`shared.data.augment`), so that the chosen object point lands in the
            central half of the *transformed* patch; ``None`` for no spatial augmentation.

    Returns:
        (3,) int64 origin of the untransformed patch ``[origin, origin + patch_size)``; it always overlaps
        the volume, and without augmentation a foreground patch always contains the chosen object point.
    """
    low, high = origin_range(shape, patch_size)
    if boxes is None or len(boxes) == 0:
        return rng.integers(low, high + 1)
    box = np.asarray(boxes, dtype=np.float64)[rng.integers(len(boxes))]
    point = np.floor(rng.uniform(box[:3], box[3:]))  # a voxel of the box
    point = np.clip(point, 0, np.asarray(shape) - 1)
    size = np.asarray(patch_size)
    position_in_patch = rng.integers(size // 4, np.maximum(size - size // 4, size // 4 + 1))
    offset = position_in_patch - (size - 1) / 2.0  # from the patch centre, in patch voxels
    if matrix is not None:
        offset = np.asarray(matrix, dtype=np.float64) @ offset
    origin = np.round(point - offset - (size - 1) / 2.0)
    return np.clip(origin, low, high).astype(np.int64)


def read_region(array: np.ndarray, start: np.ndarray, stop: np.ndarray, *, fill: float = 0.0) -> np.ndarray:
    """Copy ``array[..., start:stop]`` over the last three axes, padding with ``fill`` outside the array.

    Only the part inside the array is read, so a memory-mapped cache file is touched where needed.

    Args:
        array: (..., X, Y, Z), e.g. an image (C, X, Y, Z) or an instance map (X, Y, Z).
        start: (3,) first voxel, may be negative.
        stop: (3,) one past the last voxel, may exceed the shape.

    Returns:
        (..., stop - start) array of ``array``'s dtype.
    """
    start, stop = np.asarray(start, dtype=np.int64), np.asarray(stop, dtype=np.int64)
    spatial = np.asarray(array.shape[-3:])
    inner_start, inner_stop = np.clip(start, 0, spatial), np.clip(stop, 0, spatial)
    region = np.full(array.shape[:-3] + tuple(stop - start), fill, dtype=array.dtype)
    if np.all(inner_stop > inner_start):
        source = (Ellipsis,) + tuple(slice(a, b) for a, b in zip(inner_start, inner_stop))
        target = (Ellipsis,) + tuple(slice(a, b) for a, b in zip(inner_start - start, inner_stop - start))
        region[target] = array[source]
    return region


def crop_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    patch_size: tuple[int, ...],
    *,
    min_visible_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes given in patch coordinates to the patch; keep those with enough volume inside.

    For boxes-only data. A box is kept when at least ``min_visible_fraction`` of its volume lies inside
    the patch (0.5 by default: a half-visible object is still worth detecting, a sliver is not).

    Args:
        boxes: (N, 6) xyzxyz voxel boxes in the patch's frame (may extend beyond it).
        labels: (N,) classes.
        patch_size: (PX, PY, PZ).
        min_visible_fraction: share of a box's volume that must remain inside.

    Returns:
        ``(boxes, labels)``: (M, 6) float32 boxes clipped to ``[0, patch_size]`` and (M,) int64 labels.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    size = np.asarray(patch_size, dtype=np.float64)
    clipped = np.concatenate([np.clip(boxes[:, :3], 0, size), np.clip(boxes[:, 3:], 0, size)], axis=1)
    volume = np.prod(np.maximum(boxes[:, 3:] - boxes[:, :3], 0), axis=1)
    visible = np.prod(np.maximum(clipped[:, 3:] - clipped[:, :3], 0), axis=1)
    keep = (visible > 0) & (visible >= min_visible_fraction * volume)
    return clipped[keep].astype(np.float32), labels[keep]


def boxes_of_patch_instances(
    instance_map: np.ndarray, instance_ids: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact boxes of the instances present in a patch's instance map, with their classes.

    Every instance with at least one voxel in the patch is kept (nnDetection's rule), so boxes and the
    segmentation target always agree.

    Args:
        instance_map: (X, Y, Z) integer map of the patch.
        instance_ids: (N,) every instance id of the case.
        labels: (N,) their classes.

    Returns:
        ``(boxes, labels, ids)``: (M, 6) float32, (M,) int64, (M,) int64 for the ids present.

    Raises:
        KeyError: an id in the map has no class (the caller names the file).
    """
    boxes, present = boxes_from_instance_mask(instance_map)
    if not len(present):
        return empty_boxes(), np.zeros(0, dtype=np.int64), present
    class_of = {int(i): int(c) for i, c in zip(np.asarray(instance_ids).reshape(-1), np.asarray(labels).reshape(-1))}
    missing = [int(i) for i in present if int(i) not in class_of]
    if missing:
        raise KeyError(missing)
    return boxes, np.array([class_of[int(i)] for i in present], dtype=np.int64), present
