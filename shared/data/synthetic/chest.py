"""A procedural chest CT: body outline, fat, muscle, ribs, spine, mediastinum, heart, aorta, trachea
and two lungs, as functions of world position (RAS mm: x towards the patient's right, y
anterior, z superior), in Hounsfield units.

Each case draws its own anatomy (:func:`sample_anatomy`); :func:`render_chest` samples it on any
grid, slab by slab along z so a 512 x 512 x 250 scan stays within a few hundred MB. Vessels and
nodules are added by :mod:`.vessels` and :mod:`.lung_ct`; noise and blur come last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.data.synthetic.fields import Grid, SmoothField

AIR, FAT, MUSCLE, SOFT_TISSUE, BLOOD = -1000.0, -95.0, 45.0, 30.0, 40.0
LUNG = -860.0
CORTICAL_BONE, MARROW = 750.0, 230.0
_SLAB = 24  # z slices rendered at a time


@dataclass
class ChestAnatomy:
    """One case's anatomy, all lengths in mm.

    Attributes:
        body_axes: half-width (x) and half-depth (y) of the elliptic body outline.
        fat_mm: subcutaneous fat thickness; the muscle layer inside it is 14 mm.
        lung_centre_x: |x| of the lungs' centres (left lung at -x, right at +x).
        lung_centre_y: y of the lungs' centres.
        lung_axes: half-width and half-depth of each lung at its widest.
        lung_z: (base, apex) z of the lungs.
        spine_y: y of the vertebral bodies' centres.
        rib_z: z where each rib leaves the spine.
        heart: centre (x, y, z) and half-axes of the heart ellipsoid.
        wobble: smooth field that bends the lung surfaces.
        texture: smooth field for slow density changes inside tissue.
    """

    body_axes: tuple[float, float]
    fat_mm: float
    lung_centre_x: float
    lung_centre_y: float
    lung_axes: tuple[float, float]
    lung_z: tuple[float, float]
    spine_y: float
    rib_z: np.ndarray
    heart: tuple[np.ndarray, np.ndarray]
    wobble: SmoothField
    texture: SmoothField

    @property
    def inner_wall(self) -> tuple[float, float]:
        """Half-axes of the inner surface of the chest wall (the parietal pleura)."""
        return self.body_axes[0] - self.fat_mm - 14.0, self.body_axes[1] - self.fat_mm - 14.0


def sample_anatomy(rng: np.random.Generator) -> ChestAnatomy:
    """Draw one chest: sizes vary by about +-10% between cases, as between adults."""
    body = (rng.uniform(150, 175), rng.uniform(105, 125))
    fat = rng.uniform(8, 22)
    wall = (body[0] - fat - 14.0, body[1] - fat - 14.0)
    base, apex = rng.uniform(-135, -115), rng.uniform(115, 135)
    spine_y = -body[1] + fat + 50.0
    heart_centre = np.array([rng.uniform(-25, -5), rng.uniform(15, 30), base + rng.uniform(55, 75)])
    heart_axes = np.array([rng.uniform(55, 70), rng.uniform(45, 55), rng.uniform(50, 60)])
    lower, upper = (-body[0], -body[1], -170.0), (body[0], body[1], 170.0)
    return ChestAnatomy(
        body_axes=body, fat_mm=fat, lung_centre_x=wall[0] * rng.uniform(0.5, 0.56),
        lung_centre_y=rng.uniform(-12, 0), lung_axes=(wall[0] * rng.uniform(0.5, 0.56), wall[1] * 0.95),
        lung_z=(base, apex), spine_y=spine_y, rib_z=apex + 10 - 24.0 * np.arange(12) + rng.uniform(-4, 4),
        heart=(heart_centre, heart_axes), wobble=SmoothField(rng, lower, upper, cell_mm=18.0),
        texture=SmoothField(rng, lower, upper, cell_mm=6.0))


def lung_inside(anatomy: ChestAnatomy, x, y, z, wobble) -> np.ndarray:
    """Whether world points lie in a lung; arguments broadcast (open grids or flat point lists)."""
    base, apex = anatomy.lung_z
    middle, half = (base + apex) / 2, (apex - base) / 2
    height = (z - middle) / half
    # the apex narrows gradually, the base stays wide down to the diaphragm
    scale = np.where(height > 0, np.clip(1 - height ** 2, 0, 1) ** 0.35, np.clip(1 - height ** 8, 0, 1) ** 0.5)
    scale = np.maximum(scale, 1e-3)
    ax, ay = anatomy.lung_axes
    dx = np.abs(np.abs(x) - anatomy.lung_centre_x) / (ax * scale)
    dy = np.abs(y - anatomy.lung_centre_y) / (ay * scale)
    inside = (dx ** 2.4 + dy ** 2.4) * (1 + 0.08 * wobble) < 1
    wall_x, wall_y = anatomy.inner_wall
    inside &= (x / wall_x) ** 2 + (y / wall_y) ** 2 < 1
    inside &= ~_mediastinum(anatomy, x, y, z, margin=4.0)
    dome = base + 28.0 * np.clip(1 - dx ** 2 - dy ** 2, 0, 1)  # the diaphragm bulges up under each lung
    return inside & (z > dome)


def _mediastinum(anatomy: ChestAnatomy, x, y, z, margin: float = 0.0) -> np.ndarray:
    wall_y = anatomy.inner_wall[1]
    centre_y = (anatomy.spine_y + wall_y) / 2
    half_y = (wall_y - anatomy.spine_y) / 2 + 15
    central = (x / (32 + margin)) ** 2 + ((y - centre_y) / (half_y + margin)) ** 2 < 1
    centre, axes = anatomy.heart
    heart = (((x - centre[0]) / (axes[0] + margin)) ** 2 + ((y - centre[1]) / (axes[1] + margin)) ** 2
             + ((z - centre[2]) / (axes[2] + margin)) ** 2) < 1
    return central | heart


def render_chest(anatomy: ChestAnatomy, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Sample the anatomy on ``grid`` (no vessels, nodules, noise or blur yet).

    Returns:
        ``(hu, lung)``: hu (X, Y, Z) float32 Hounsfield units; lung (X, Y, Z) bool, the lung parenchyma.
    """
    hu = np.empty(grid.shape, dtype=np.float32)
    lung = np.empty(grid.shape, dtype=bool)
    for start in range(0, grid.shape[2], _SLAB):
        stop = min(start + _SLAB, grid.shape[2])
        slab = Grid((grid.shape[0], grid.shape[1], stop - start), grid.spacing,
                    (grid.origin[0], grid.origin[1], grid.origin[2] + start * grid.spacing[2]))
        hu[..., start:stop], lung[..., start:stop] = _render_slab(anatomy, slab)
    return hu, lung


def _render_slab(anatomy: ChestAnatomy, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = grid.axes()
    shape = grid.shape
    texture = anatomy.texture.on_grid(grid)
    body_x, body_y = anatomy.body_axes
    body = np.broadcast_to((x / body_x) ** 2 + (y / body_y) ** 2 < 1, shape)
    fat_x, fat_y = body_x - anatomy.fat_mm, body_y - anatomy.fat_mm
    under_fat = np.broadcast_to((x / fat_x) ** 2 + (y / fat_y) ** 2 < 1, shape)
    hu = np.full(shape, AIR, dtype=np.float32)
    hu[body] = FAT
    hu[under_fat] = MUSCLE
    hu += np.where(body, 8.0 * texture, 0.0).astype(np.float32)
    mediastinum = np.broadcast_to(_mediastinum(anatomy, x, y, z), shape) & under_fat
    # mediastinal fat where the slow texture is high: fat planes between the organs
    hu[mediastinum] = np.where(texture[mediastinum] > 0.6, FAT, SOFT_TISSUE)
    _draw_heart_and_vessels(anatomy, hu, x, y, z)
    lung = lung_inside(anatomy, x, y, z, anatomy.wobble.on_grid(grid))
    dependent = np.clip(-(y - anatomy.lung_centre_y) / anatomy.lung_axes[1], 0, 1)  # gravity: denser at the back
    lung_hu = LUNG + 35.0 * dependent + 12.0 * texture
    hu[lung] = np.broadcast_to(lung_hu, shape)[lung]
    _draw_spine(anatomy, hu, x, y, z)
    _draw_ribs(anatomy, hu, x, y, z)
    return hu, lung


def _draw_heart_and_vessels(anatomy: ChestAnatomy, hu: np.ndarray, x, y, z) -> None:
    centre, axes = anatomy.heart
    heart = (((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2
             + ((z - centre[2]) / axes[2]) ** 2)
    hu[np.broadcast_to(heart < 1.12 ** 2, hu.shape)] = FAT  # pericardial fat
    hu[np.broadcast_to(heart < 1, hu.shape)] = BLOOD
    aorta = (x + 22) ** 2 + (y - anatomy.spine_y - 22) ** 2
    below_arch = z < anatomy.lung_z[1] - 40
    hu[np.broadcast_to((aorta < 15 ** 2) & below_arch, hu.shape)] = FAT
    hu[np.broadcast_to((aorta < 12 ** 2) & below_arch, hu.shape)] = BLOOD
    trachea = x ** 2 + (y - anatomy.spine_y - 40) ** 2
    above_carina = z > (anatomy.lung_z[0] + anatomy.lung_z[1]) / 2 + 25
    hu[np.broadcast_to((trachea < 11 ** 2) & above_carina, hu.shape)] = SOFT_TISSUE
    hu[np.broadcast_to((trachea < 9 ** 2) & above_carina, hu.shape)] = AIR


def _draw_spine(anatomy: ChestAnatomy, hu: np.ndarray, x, y, z) -> None:
    centre_y = anatomy.spine_y
    body = x ** 2 + (y - centre_y) ** 2
    disc = np.mod(z - anatomy.rib_z[0], 26.0) < 5.0  # intervertebral discs between vertebral bodies
    canal_y = centre_y - 26
    canal = x ** 2 + (y - canal_y) ** 2
    arch = (canal < 13 ** 2) & (y < canal_y + 4)
    spinous = (np.abs(x) < 4) & (y < canal_y - 8) & (y > canal_y - 34)
    transverse = (np.abs(y - canal_y) < 5) & (np.abs(x) < 32)
    bone = np.broadcast_to((arch | spinous | transverse) & ~disc, hu.shape)
    hu[bone] = CORTICAL_BONE * 0.8
    hu[np.broadcast_to(canal < 7 ** 2, hu.shape)] = SOFT_TISSUE
    hu[np.broadcast_to((body < 17 ** 2), hu.shape)] = CORTICAL_BONE
    hu[np.broadcast_to((body < 15.5 ** 2) & ~disc, hu.shape)] = MARROW
    hu[np.broadcast_to((body < 17 ** 2) & disc, hu.shape)] = 80.0


def _draw_ribs(anatomy: ChestAnatomy, hu: np.ndarray, x, y, z) -> None:
    """Ribs run in the chest wall from the spine round to the front, descending as they go."""
    ring_x = anatomy.body_axes[0] - anatomy.fat_mm - 7
    ring_y = anatomy.body_axes[1] - anatomy.fat_mm - 7
    radial = (np.sqrt((x / ring_x) ** 2 + (y / ring_y) ** 2) - 1) * (ring_x + ring_y) / 2
    angle = np.arctan2(y, x)
    from_back = np.abs(np.angle(np.exp(1j * (angle + np.pi / 2))))  # 0 at the spine, pi at the sternum
    cartilage = from_back > np.pi - 0.45
    near = np.abs(radial) < 4.5
    for rib_z in anatomy.rib_z:
        along = z - (rib_z - 26.0 * from_back)
        section = (radial / 4.0) ** 2 + (along / 6.5) ** 2
        rib = near & (section < 1) & ~cartilage & (from_back > 0.35)
        hu[rib] = CORTICAL_BONE
        hu[rib & (section < 0.45)] = MARROW
