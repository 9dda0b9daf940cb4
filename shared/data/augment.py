"""Training augmentation for detection patches, with boxes following the image.

Geometry (rotation, scaling, mirroring) is one affine map per sample from patch voxels to source voxels,
applied by a single interpolation: only the region of the volume that the transformed patch covers is
read (nnU-Net's trick of working on a crop around the final patch), then ``affine_grid`` +
``grid_sample`` resample it straight into the patch, bilinear for the image and nearest for the instance
map. Without rotation or scaling the patch is an exact crop, flipped where mirrored.

Boxes: when a case has an instance map, the boxes are recomputed from the transformed map (exact). For
boxes-only cases the 8 corners are transformed and their axis-aligned hull taken; that is exact for
mirroring, scaling and 90-degree rotations, but a rotation by an angle ``a`` inflates a box by up to a
factor ``|cos a| + |sin a|`` per rotated axis (1.26 at 15 degrees, 1.37 at 30), so boxes-only cases are
not rotated by default (``rotate_boxes_only_cases``).

Intensity (after geometry, nnU-Net's order and default ranges): Gaussian noise, Gaussian blur,
multiplicative brightness, contrast, gamma. Every draw comes from the sample's
``numpy.random.Generator``, so a sample is reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from shared.data.sampling import IMAGE_PAD_VALUE, read_region


@dataclass(frozen=True)
class AugmentationSettings:
    """Probabilities (per sample) and ranges of every augmentation; defaults follow nnU-Net/nnDetection.

    Build from a JSON-able dict with :meth:`from_spec`; ranges are ``[low, high]`` drawn uniformly.
    Mirroring is decided per axis with ``mirror_probability``; rotation draws one angle per axis in
    ``[-rotation_degrees, rotation_degrees]``; ``scaling_range`` is the factor by which objects grow.
    """

    rotation_probability: float = 0.2
    rotation_degrees: tuple[float, float, float] = (30.0, 30.0, 30.0)
    rotate_boxes_only_cases: bool = False
    scaling_probability: float = 0.2
    scaling_range: tuple[float, float] = (0.7, 1.4)
    mirror_probability: float = 0.5
    noise_probability: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    blur_probability: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_probability: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_probability: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma_probability: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> AugmentationSettings:
        """Defaults overridden by ``spec``; an unknown key raises ``ValueError`` naming the valid ones."""
        spec = dict(spec or {})
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - names)
        if unknown:
            raise ValueError(f"unknown augmentation settings {unknown}; valid keys are {sorted(names)}")
        for key, value in spec.items():
            if isinstance(value, list):
                spec[key] = tuple(value)
        if "rotation_degrees" in spec and np.isscalar(spec["rotation_degrees"]):
            spec["rotation_degrees"] = (float(spec["rotation_degrees"]),) * 3
        settings = cls(**spec)
        settings._check()
        return settings

    def _check(self) -> None:
        for key, value in dataclasses.asdict(self).items():
            if key.endswith("probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentation setting {key} must be in [0, 1], got {value}")
            if key.endswith(("_range", "_variance", "_sigma")) and not (len(value) == 2 and 0 <= value[0] <= value[1]):
                raise ValueError(f"augmentation setting {key} must be [low, high] with 0 <= low <= high, got {list(value)}")
        if len(self.rotation_degrees) != 3:
            raise ValueError(f"augmentation setting rotation_degrees needs one angle per axis, got {list(self.rotation_degrees)}")

    def to_spec(self) -> dict[str, Any]:
        """The JSON-able dict that :meth:`from_spec` reads back."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()}


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


def draw_spatial_matrix(
    settings: AugmentationSettings, rng: np.random.Generator, *, allow_rotation: bool = True
) -> np.ndarray:
    """Draw the (3, 3) map from patch offsets to source offsets (voxels, about the patch centre).

    ``source = rotation @ (mirror / scale) @ patch``; identity when nothing was drawn.
    """
    mirror = np.where(rng.random(3) < settings.mirror_probability, -1.0, 1.0)
    matrix = np.diag(mirror)
    if rng.random() < settings.scaling_probability:
        matrix = matrix / rng.uniform(*settings.scaling_range)
    if allow_rotation and rng.random() < settings.rotation_probability:
        limits = np.radians(np.asarray(settings.rotation_degrees, dtype=np.float64))
        matrix = rotation_matrix(rng.uniform(-limits, limits)) @ matrix
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
        matrix: (3, 3) patch offset → source offset (see :func:`draw_spatial_matrix`); ``None`` = identity.

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


def augment_intensity(image: torch.Tensor, settings: AugmentationSettings, rng: np.random.Generator) -> torch.Tensor:
    """Noise, blur, brightness, contrast and gamma, each with its probability; one draw per sample.

    Args:
        image: (C, X, Y, Z) float32 patch (not modified).

    Returns:
        (C, X, Y, Z) float32 augmented patch.
    """
    if rng.random() < settings.noise_probability:
        sigma = math.sqrt(rng.uniform(*settings.noise_variance))
        noise = rng.standard_normal(tuple(image.shape), dtype=np.float32) * np.float32(sigma)
        image = image + torch.from_numpy(noise)
    if rng.random() < settings.blur_probability:
        image = gaussian_blur(image, rng.uniform(*settings.blur_sigma))
    if rng.random() < settings.brightness_probability:
        image = image * float(rng.uniform(*settings.brightness_range))
    if rng.random() < settings.contrast_probability:
        image = adjust_contrast(image, rng.uniform(*settings.contrast_range))
    if rng.random() < settings.gamma_probability:
        image = adjust_gamma(image, rng.uniform(*settings.gamma_range))
    return image


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Isotropic Gaussian blur (voxels) of every channel, edges replicated, kernel cut at 3 sigma.

    scipy's separable filter, several times faster on a CPU than ``conv3d`` with 1-D kernels.

    Args:
        image: (C, X, Y, Z) float32.
        sigma: standard deviation in voxels.

    Returns:
        (C, X, Y, Z) float32.
    """
    array = image.numpy()
    blurred = np.empty_like(array)
    for channel in range(array.shape[0]):
        ndimage.gaussian_filter(array[channel], sigma, output=blurred[channel], mode="nearest", truncate=3.0)
    return torch.from_numpy(blurred)


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale each channel's deviations from its mean by ``factor``, keeping its value range (nnU-Net)."""
    flat = image.reshape(image.shape[0], -1)
    shape = (-1,) + (1,) * (image.ndim - 1)
    mean, low, high = flat.mean(1).reshape(shape), flat.min(1).values.reshape(shape), flat.max(1).values.reshape(shape)
    return torch.minimum(torch.maximum((image - mean) * factor + mean, low), high)


def adjust_gamma(image: torch.Tensor, gamma: float, epsilon: float = 1e-7) -> torch.Tensor:
    """Gamma on each channel rescaled to [0, 1], then mean and standard deviation restored (nnU-Net)."""
    flat = image.reshape(image.shape[0], -1)
    shape = (-1,) + (1,) * (image.ndim - 1)
    mean, std = flat.mean(1).reshape(shape), flat.std(1).reshape(shape)
    low, high = flat.min(1).values.reshape(shape), flat.max(1).values.reshape(shape)
    span = high - low + epsilon
    result = ((image - low) / span).clamp(0, 1) ** gamma * span + low
    flat_result = result.reshape(image.shape[0], -1)
    new_mean, new_std = flat_result.mean(1).reshape(shape), flat_result.std(1).reshape(shape)
    return (result - new_mean) / (new_std + epsilon) * std + mean
