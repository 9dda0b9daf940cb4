"""The ``lung_ct`` task: procedural chest CT with real LIDC-IDRI nodule shapes, benign vs malignant.

A case is a chest (:mod:`.chest`) with pulmonary vessel trees (:mod:`.vessels`, the look-alikes), then
0..3 (``quick``) or 0..5 (``full``) nodules rasterised from LIDC contours (:mod:`.lidc`), placed in the
lung, a fifth of them touching the pleura; then scanner blur and correlated noise. The class of a
nodule is LIDC's: mean malignancy rating >= 3 is malignant. Texture follows the mean texture rating:
ground glass (a hazy -750..-450 HU), part-solid (hazy rim, solid core) or solid.

The ``quick`` grid is a chest *section* (96 x 96 x 56 at 1.4 x 1.4 x 2.5 mm, centred on one lung);
``full`` is a whole chest (512 x 512 x 256 at 0.7 x 0.7 x 1.25 mm).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from shared.data.synthetic.case import Case, TaskSpec
from shared.data.synthetic.chest import BLOOD, CORTICAL_BONE, MARROW, render_chest, sample_anatomy
from shared.data.synthetic.fields import Grid, correlated_noise
from shared.data.synthetic.lidc import CREDIT, NoduleRecord, load_lidc_nodules, nodule_mask
from shared.data.synthetic.vessels import grow_vessel_trees, render_segments

CLASSES = ("benign", "malignant")
GRIDS = {"quick": ((96, 96, 56), (1.4, 1.4, 2.5)), "full": ((512, 512, 256), (0.7, 0.7, 1.25))}
#: smallest and largest nodule (largest in-plane extent, mm) per preset; quick keeps them >= 4 voxels wide
DIAMETERS = {"quick": (5.0, 30.0), "full": (3.0, 30.0)}
#: cases per split (training, validation, test, unlabelled); quick has 96 training scans because
#: fewer do not teach a network these small nodules (docs/data.md, "Presets")
COUNTS = {"quick": (96, 6, 10, 16), "full": (80, 20, 50, 150)}
JUXTA_PLEURAL = 0.2  # fraction of nodules placed against the chest wall


def generate_lung_case(rng: np.random.Generator, shape, spacing, preset: str = "quick", empty: bool = False) -> Case:
    """One chest CT with its nodules.

    Args:
        rng: the case's own generator (everything random is drawn from it, in a fixed order).
        shape: grid (X, Y, Z); smaller than a chest gives a section centred on one lung.
        spacing: mm per voxel.
        preset: picks the nodule size range (:data:`DIAMETERS`) and the nodule count.
        empty: no nodule (about one scan in ten in a data set).

    Returns:
        The case: image (1, X, Y, Z) int16 HU, instances (X, Y, Z), labels 0 benign / 1 malignant.
    """
    anatomy = sample_anatomy(rng)
    grid = Grid.centred(shape, spacing, _window_centre(rng, anatomy, shape, spacing))
    hu, lung = render_chest(anatomy, grid)
    vessels = render_segments(grow_vessel_trees(rng, anatomy), grid)
    hu = np.where(lung, hu + vessels * (BLOOD - hu), hu).astype(np.float32)
    instances = np.zeros(grid.shape, dtype=np.int16)
    labels: list[int] = []
    count = 0 if empty else int(rng.integers(1, 4 if preset == "quick" else 6))
    candidates = _candidates(preset)
    # distance to the pleura decides where a nodule is interior and where juxta-pleural
    depth = ndimage.distance_transform_edt(lung, sampling=grid.spacing) if count else None
    for _ in range(count):
        record = candidates[int(rng.integers(len(candidates)))]
        if _place_nodule(rng, record, hu, depth, instances, len(labels) + 1, grid):
            labels.append(record.label)
    segmentations = {"lung": lung_labels(lung, vessels, instances), "chest": chest_labels(hu, lung)}
    hu = _scanner(rng, hu, grid)
    return Case(image=hu[None], affine=grid.affine, instances=instances, labels=labels, segmentations=segmentations)


def lung_labels(lung: np.ndarray, vessels: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """The ``lung`` label set: 1 lung parenchyma, 2 pulmonary vessels (at least half a voxel), 3 nodules."""
    labels = np.where(lung, 1, 0).astype(np.uint8)
    labels[lung & (vessels >= 0.5)] = 2
    labels[instances > 0] = 3
    return labels


def chest_labels(hu: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """The ``chest`` label set from the noise-free HU map: 1 heart and great vessels (blood outside the
    lung), 2 bone (cortex and marrow of the spine and ribs)."""
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[(hu == BLOOD) & ~lung] = 1
    labels[(hu == MARROW) | (hu == CORTICAL_BONE) | (hu == CORTICAL_BONE * 0.8)] = 2
    return labels


def _window_centre(rng: np.random.Generator, anatomy, shape, spacing) -> np.ndarray:
    extent = np.array(shape) * np.array(spacing)
    base, apex = anatomy.lung_z
    if extent[0] >= 1.6 * anatomy.body_axes[0]:  # the whole chest fits: centre it
        return np.array([0.0, rng.uniform(-10, 10), (base + apex) / 2 + rng.uniform(-10, 10)])
    side = rng.choice([-1.0, 1.0])
    z_room = max((apex - base) / 2 - extent[2] / 2 - 10, 0)
    return np.array([side * (anatomy.lung_centre_x + rng.uniform(-10, 15)),
                     anatomy.lung_centre_y + rng.uniform(-10, 10),
                     (base + apex) / 2 + rng.uniform(-z_room, z_room)])


def _candidates(preset: str) -> list[NoduleRecord]:
    low, high = DIAMETERS.get(preset, DIAMETERS["quick"])
    return [n for n in load_lidc_nodules() if low <= n.diameter_mm <= high]


def _place_nodule(rng, record: NoduleRecord, hu, depth, instances, instance_id: int, grid: Grid) -> bool:
    """Draw the nodule into ``hu`` and ``instances`` at a free spot of the lung; False if none fits."""
    annotation = record.annotation_ids[int(rng.integers(len(record.annotation_ids)))]
    mask = nodule_mask(annotation, tuple(grid.spacing))
    mask = mask[tuple(slice(None, None, -1) if flip else slice(None) for flip in rng.random(3) < 0.5)]
    if rng.random() < 0.5:  # in-plane spacing is isotropic, so swapping x and y keeps the shape
        mask = mask.transpose(1, 0, 2)
    size = np.array(mask.shape)
    radius_mm = 0.5 * float((size * np.array(grid.spacing)).max())
    juxta = rng.random() < JUXTA_PLEURAL
    wanted = (depth > 0.4 * radius_mm) & (depth < 0.9 * radius_mm) if juxta else depth > radius_mm + 1.5
    wanted[: size[0] // 2 + 1] = wanted[-(size[0] // 2 + 1):] = False
    wanted[:, : size[1] // 2 + 1] = wanted[:, -(size[1] // 2 + 1):] = False
    wanted[..., : size[2] // 2 + 1] = wanted[..., -(size[2] // 2 + 1):] = False
    options = np.flatnonzero(wanted)
    for _ in range(20):
        if not len(options):
            return False
        centre = np.array(np.unravel_index(options[int(rng.integers(len(options)))], depth.shape))
        low = centre - size // 2
        region = tuple(slice(l, l + n) for l, n in zip(low, size))
        margin = tuple(slice(max(l - 2, 0), l + n + 2) for l, n in zip(low, size))
        if instances[margin].any():
            continue
        instances[region][mask] = instance_id
        _draw_nodule(rng, record, hu, region, mask, grid)
        return True
    return False


def _draw_nodule(rng, record: NoduleRecord, hu, region, mask, grid: Grid) -> None:
    """Blend the nodule over the tissue (never darker than what is there: the wall stays the wall)."""
    sigma = 0.5 / np.array(grid.spacing)  # half a millimetre of edge softness
    padded = np.pad(mask.astype(np.float32), 2)
    alpha = ndimage.gaussian_filter(padded, sigma)[2:-2, 2:-2, 2:-2]
    alpha = np.where(mask, np.maximum(alpha, 0.6), alpha)
    texture = record.texture
    solid_hu = rng.uniform(-10, 60) + 20 * rng.standard_normal(mask.shape)
    if texture <= 2.0:
        value = rng.uniform(-750, -450) + 30 * rng.standard_normal(mask.shape)
    elif texture < 4.0:
        core = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=grid.spacing)[1:-1, 1:-1, 1:-1]
        solid = core > 0.45 * core.max()
        value = np.where(solid, solid_hu, rng.uniform(-700, -450))
    else:
        value = solid_hu
    view = hu[region]
    np.maximum(view, (1 - alpha) * view + alpha * value, out=view)


def _scanner(rng: np.random.Generator, hu: np.ndarray, grid: Grid) -> np.ndarray:
    """Blur by the point-spread function, add correlated quantum noise, store as int16."""
    psf_mm = np.array([rng.uniform(0.5, 0.9)] * 2 + [rng.uniform(0.7, 1.2)])
    blurred = ndimage.gaussian_filter(hu, psf_mm / np.array(grid.spacing))
    blurred += correlated_noise(rng, grid.shape, 0.7, rng.uniform(18, 45))
    return np.clip(np.round(blurred), -1024, 3071).astype(np.int16)


LUNG_CT = TaskSpec(name="lung_ct", classes=CLASSES, channels=("CT",), modality="CT", grids=GRIDS,
                   counts=COUNTS, generate=generate_lung_case, credits=CREDIT,
                   label_sets={"lung": ("lungs", "vessels", "nodules"), "chest": ("heart and great vessels", "bone")})


def generate_nodule_case(rng: np.random.Generator, shape, spacing, preset: str = "quick", empty: bool = False) -> Case:
    """The ``lung_ct`` case of the same generator, every nodule in one class (LUNA16's nodule detection)."""
    case = generate_lung_case(rng, shape, spacing, preset, empty)
    case.labels = [0] * len(case.labels)
    return case


#: the same scans as ``lung_ct`` (same seeds, same case indices), one class: nodule vs background
LUNG_NODULES = replace(LUNG_CT, name="lung_nodules", classes=("nodule",), generate=generate_nodule_case)
