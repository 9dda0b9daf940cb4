"""Grids in millimetres and smooth random fields on them: the shared tools of the phantom generators.

A generator describes anatomy as functions of world position (mm), then samples them on whatever
grid a preset asks for; the same case seen on a coarser grid is the same anatomy. Smooth random
fields (boundary wobble, bias fields, displacement fields, tissue texture) are coarse Gaussian noise
interpolated trilinearly, evaluated either on a whole grid (separably, cheap at 512 x 512 x 250) or
at scattered points (the same interpolation), so both views of a field agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid in RAS millimetres.

    Attributes:
        shape: voxels per axis (X, Y, Z).
        spacing: mm per voxel along each axis.
        origin: world position (mm) of the centre of voxel (0, 0, 0).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def centred(cls, shape, spacing, centre) -> "Grid":
        """The grid of ``shape`` and ``spacing`` whose middle lies at ``centre`` (mm)."""
        shape = tuple(int(n) for n in shape)
        spacing = tuple(float(s) for s in spacing)
        origin = tuple(float(c - (n - 1) / 2 * s) for n, s, c in zip(shape, spacing, centre))
        return cls(shape, spacing, origin)

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel-index → RAS-mm matrix, as MONAI and NIfTI use it."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinate (mm) of the voxel centres along each axis, as open (broadcastable) arrays.

        Shape:
            (X, 1, 1), (1, Y, 1), (1, 1, Z).
        """
        vectors = [o + s * np.arange(n) for o, s, n in zip(self.origin, self.spacing, self.shape)]
        return (vectors[0][:, None, None].astype(np.float32), vectors[1][None, :, None].astype(np.float32),
                vectors[2][None, None, :].astype(np.float32))

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) mm → continuous voxel indices (N, 3)."""
        return (np.asarray(points, dtype=np.float64) - np.array(self.origin)) / np.array(self.spacing)


class SmoothField:
    """A random field, smooth on the scale ``cell_mm``, zero mean and unit standard deviation (about).

    Args:
        rng: the generator the coarse noise is drawn from (drawn once, at construction).
        lower: world corner (mm) the field must cover.
        upper: opposite world corner (mm).
        cell_mm: distance between coarse noise samples; features are about twice this size.
    """

    def __init__(self, rng: np.random.Generator, lower, upper, *, cell_mm: float):
        self.lower = np.asarray(lower, dtype=np.float64) - 2 * cell_mm
        self.cell_mm = float(cell_mm)
        shape = np.ceil((np.asarray(upper, dtype=np.float64) + 2 * cell_mm - self.lower) / cell_mm).astype(int) + 1
        noise = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)), 1.0, mode="wrap")
        self.values = (noise / max(noise.std(), 1e-6)).astype(np.float32)

    def at_points(self, points: np.ndarray) -> np.ndarray:
        """Field values at world points (N, 3) mm; shape (N,)."""
        index = (np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.lower) / self.cell_mm
        return ndimage.map_coordinates(self.values, index.T, order=1, mode="nearest")

    def on_grid(self, grid: Grid) -> np.ndarray:
        """Field values at every voxel centre of ``grid``; shape (X, Y, Z) float32."""
        result = self.values
        for axis, (origin, spacing, count) in enumerate(zip(grid.origin, grid.spacing, grid.shape)):
            position = (origin + spacing * np.arange(count) - self.lower[axis]) / self.cell_mm
            weights = _linear_weights(position, self.values.shape[axis])
            result = np.moveaxis(np.tensordot(weights, np.moveaxis(result, axis, 0), axes=(1, 0)), 0, axis)
        return result.astype(np.float32)


def _linear_weights(position: np.ndarray, size: int) -> np.ndarray:
    """(len(position), size) matrix of linear interpolation weights, clamped at the ends."""
    position = np.clip(position, 0, size - 1)
    low = np.minimum(np.floor(position).astype(int), size - 2)
    fraction = (position - low).astype(np.float32)
    weights = np.zeros((len(position), size), dtype=np.float32)
    rows = np.arange(len(position))
    weights[rows, low] = 1 - fraction
    weights[rows, low + 1] = fraction
    return weights


def correlated_noise(rng: np.random.Generator, shape, sigma_voxels, std: float) -> np.ndarray:
    """Gaussian noise blurred by ``sigma_voxels`` (the scanner's noise texture), scaled to ``std``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(tuple(shape), dtype=np.float32), sigma_voxels)
    return noise * (std / max(float(noise.std()), 1e-6))
