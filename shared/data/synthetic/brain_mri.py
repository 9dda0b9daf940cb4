"""The ``brain_mri`` task: two-channel brain MRI (T1c-like, FLAIR-like) with metastasis-like lesions.

The anatomy is the MNI152 2009c nonlinear symmetric template that nilearn ships (T1 image, grey and
white matter probability maps), warped per case by a random affine and a smooth displacement field.
The T1c-like channel is the template's T1; the FLAIR-like channel is made from the tissue maps
(white matter darker than grey, CSF dark). Lesions are irregular spheres with an enhancing rim and,
when large, a necrotic core (T1c), surrounded by white-matter oedema that shows in FLAIR only. Then
a smooth multiplicative bias field per channel and Rician noise. One class: metastasis.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from shared.data.synthetic.case import Case, TaskSpec
from shared.data.synthetic.fields import Grid, SmoothField

CLASSES = ("metastasis",)
CHANNELS = ("T1c", "FLAIR")
GRIDS = {"quick": ((80, 96, 64), (2.0, 2.0, 2.5)), "full": ((176, 208, 176), (1.0, 1.0, 1.0))}
#: cases per split (training, validation, test, unlabelled)
COUNTS = {"quick": (24, 6, 10, 16), "full": (80, 20, 50, 150)}
RADII = {"quick": (3.5, 12.0), "full": (2.5, 12.0)}  # lesion radius range, mm
CENTRE = (0.0, -18.0, 12.0)  # world mm: the middle of the MNI brain
CREDIT = ("Brain anatomy: MNI ICBM 152 nonlinear symmetric 2009a/c templates (Fonov et al., NeuroImage 2011; "
          "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, McGill University; free use "
          "with this notice), as shipped by nilearn (BSD-3-Clause).")
_TEMPLATES = ("t1", "gm", "wm")


def template_paths() -> dict[str, Path]:
    """The MNI152 templates inside the installed nilearn, found without importing it."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the brain templates come from nilearn: pip install --no-deps -r requirements-data.txt "
                                "(nilearn==0.14.1, read as files)")
    folder = Path(spec.origin).parent / "datasets" / "data"
    return {name: folder / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in _TEMPLATES}


@functools.lru_cache(maxsize=2)
def load_templates(factor: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The templates, optionally averaged over ``factor``-cubed blocks (for coarse grids: this anti-aliases
    them and makes sampling several times faster).

    Returns:
        ``(maps, affine)``: maps (3, X, Y, Z) float32 in [0, 1] (T1, grey, white), their RAS affine.
    """
    paths = template_paths()
    images = [nib.load(str(paths[name])) for name in _TEMPLATES]
    maps = np.stack([np.asarray(image.dataobj, dtype=np.float32) / 255.0 for image in images])
    affine = np.array(images[0].affine, dtype=np.float64)
    if factor > 1:
        size = np.array(maps.shape[1:]) // factor
        maps = maps[:, :size[0] * factor, :size[1] * factor, :size[2] * factor]
        maps = maps.reshape(3, size[0], factor, size[1], factor, size[2], factor).mean(axis=(2, 4, 6))
        affine[:3, 3] += affine[:3, :3] @ np.full(3, (factor - 1) / 2)  # block centre
        affine[:3, :3] *= factor
    return np.ascontiguousarray(maps), affine


def generate_brain_case(rng: np.random.Generator, shape, spacing, preset: str = "quick", empty: bool = False) -> Case:
    """One two-channel brain MRI with its lesions.

    Args:
        rng: the case's own generator.
        shape: grid (X, Y, Z).
        spacing: mm per voxel.
        preset: picks the lesion size range (:data:`RADII`).
        empty: no lesion.

    Returns:
        The case: image (2, X, Y, Z) int16 (T1c, FLAIR), instances (X, Y, Z), labels all 0.
    """
    grid = Grid.centred(shape, spacing, np.array(CENTRE) + rng.uniform(-5, 5, 3))
    t1, grey, white = _warped_templates(rng, grid)
    brain = grey + white
    csf = np.clip((t1 > 0.05).astype(np.float32) * ndimage.binary_fill_holes(brain > 0.5) - brain, 0, 1)
    flair = 0.55 * white + 0.75 * grey + 0.08 * csf + 0.45 * t1 * (brain < 0.1)
    t1c = t1.copy()
    instances = np.zeros(grid.shape, dtype=np.int16)
    count = 0 if empty else int(rng.integers(1, 4))
    depth = ndimage.distance_transform_edt(brain > 0.5, sampling=grid.spacing) if count else None
    low, high = RADII.get(preset, RADII["quick"])
    for _ in range(count):
        radius = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        _place_lesion(rng, radius, depth, white, t1c, flair, instances, grid)
    labels = [0] * int(instances.max())
    image = np.stack([_acquire(rng, t1c, grid), _acquire(rng, flair, grid)])
    return Case(image=image, affine=grid.affine, instances=instances, labels=labels,
                segmentations={"brain": brain_labels(csf, grey, white, instances)})


def brain_labels(csf: np.ndarray, grey: np.ndarray, white: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """The ``brain`` label set: 1 CSF, 2 grey matter, 3 white matter (the likeliest tissue where one
    reaches 0.5), 4 lesions."""
    tissues = np.stack([csf, grey, white])
    labels = np.where(tissues.max(0) >= 0.5, tissues.argmax(0) + 1, 0).astype(np.uint8)
    labels[instances > 0] = 4
    return labels


def _warped_templates(rng: np.random.Generator, grid: Grid) -> list[np.ndarray]:
    """Sample the templates on ``grid`` through a random affine plus a smooth displacement field."""
    maps, affine = load_templates(2 if min(grid.spacing) >= 1.8 else 1)
    x, y, z = grid.axes()
    points = np.stack(np.broadcast_arrays(x, y, z), axis=-1)  # (X, Y, Z, 3) world mm
    angle = rng.uniform(-0.12, 0.12)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    linear = (rotation @ np.diag(rng.uniform(0.92, 1.08, 3))).astype(np.float32)
    centre = np.array(CENTRE, dtype=np.float32)
    lower, upper = points.reshape(-1, 3).min(axis=0), points.reshape(-1, 3).max(axis=0)
    displacement = np.stack([SmoothField(rng, lower, upper, cell_mm=16.0).on_grid(grid) for _ in range(3)], -1)
    source = (points - centre) @ linear.T + centre + 3.0 * displacement
    index = (source - affine[:3, 3].astype(np.float32)) / np.diag(affine)[:3].astype(np.float32)
    return _sample_trilinear(maps, index)


def _sample_trilinear(maps: np.ndarray, index: np.ndarray) -> list[np.ndarray]:
    """Trilinear samples of (C, X, Y, Z) ``maps`` at voxel positions ``index`` (..., 3), zero outside.

    ``grid_sample`` does all channels in one pass, several times faster than scipy per channel.
    """
    sizes = np.array(maps.shape[1:], dtype=np.float32)
    normalised = 2 * index / (sizes - 1) - 1  # align_corners=True: -1 and 1 are the end voxels' centres
    grid = torch.from_numpy(np.ascontiguousarray(normalised[..., ::-1], dtype=np.float32))[None]
    sampled = torch.nn.functional.grid_sample(torch.from_numpy(maps)[None], grid, mode="bilinear",
                                              padding_mode="zeros", align_corners=True)[0].numpy()
    return list(sampled)


def _place_lesion(rng, radius, depth, white, t1c, flair, instances, grid: Grid) -> None:
    """An irregular sphere inside the brain, away from other lesions: rim, core, oedema."""
    options = np.flatnonzero(depth > radius + 2)
    reach = radius * 3.0  # oedema spreads up to about 2.8 radii
    size = np.ceil(2 * reach / np.array(grid.spacing)).astype(int) | 1
    for _ in range(20):
        if not len(options):
            return
        centre = np.array(np.unravel_index(options[int(rng.integers(len(options)))], depth.shape))
        low = np.maximum(centre - size // 2, 0)
        region = tuple(slice(l, min(l + n, s)) for l, n, s in zip(low, size, grid.shape))
        if instances[region].any():
            continue
        level = _lesion_level(rng, region, centre, radius, grid)
        tumour = level < 1
        if not tumour.any():
            return
        instances[region][tumour] = instances.max() + 1
        oedema = np.clip((rng.uniform(2.0, 2.8) - level) / 0.5, 0, 1) * white[region] * ~tumour
        t1c[region] = t1c[region] * (1 - 0.2 * oedema)
        flair[region] = np.maximum(flair[region], 1.05 * oedema)
        necrotic = level < (rng.uniform(0.4, 0.65) if radius > 5 else 0)
        rim = tumour & ~necrotic
        t1c[region][rim] = rng.uniform(1.25, 1.5)  # gadolinium: clearly brighter than white matter (0.87)
        t1c[region][necrotic] = rng.uniform(0.15, 0.3)
        flair[region][rim] = rng.uniform(0.85, 1.0)
        flair[region][necrotic] = rng.uniform(0.85, 1.0)
        return


def _lesion_level(rng, region, centre, radius: float, grid: Grid) -> np.ndarray:
    """Distance from the lesion centre in radii, bent by a smooth field: < 1 is the lesion."""
    axes = [(np.arange(r.start, r.stop) - c) * s for r, c, s in zip(region, centre, grid.spacing)]
    offset = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    flat = offset.reshape(-1, 3)
    bumps = SmoothField(rng, flat.min(0), flat.max(0), cell_mm=max(radius / 1.5, 2.0)).at_points(flat)
    return np.linalg.norm(offset, axis=-1) / radius * (1 + 0.18 * bumps.reshape(offset.shape[:3]))


def _acquire(rng: np.random.Generator, signal: np.ndarray, grid: Grid) -> np.ndarray:
    """Smooth multiplicative bias, slight blur, Rician noise; scaled to a scanner-like 0..1000 range."""
    lower = np.array(grid.origin)
    upper = lower + np.array(grid.spacing) * (np.array(grid.shape) - 1)
    bias = np.exp(0.12 * SmoothField(rng, lower, upper, cell_mm=45.0).on_grid(grid))
    clean = ndimage.gaussian_filter(signal * bias, 0.5)
    sigma = rng.uniform(0.02, 0.045)
    real = clean + sigma * rng.standard_normal(grid.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(grid.shape, dtype=np.float32)
    # integer intensities, as MR scanners store them (and half the bytes to compress)
    return np.round(1000.0 * np.sqrt(real ** 2 + imaginary ** 2)).astype(np.int16)


BRAIN_MRI = TaskSpec(name="brain_mri", classes=CLASSES, channels=CHANNELS, modality="MRI", grids=GRIDS,
                     counts=COUNTS, generate=generate_brain_case, credits=CREDIT,
                     label_sets={"brain": ("CSF", "grey matter", "white matter", "lesions")})
