"""Preview PNGs: a slice through each object with its box and class name, and a mosaic of all cases.

Boxes are drawn one voxel outside the object's box, so small objects stay visible inside them.

Looking at these is how a person checks that the objects are visible and the boxes fit them.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from shared.boxes.convention import boxes_from_instance_mask  # noqa: E402
from shared.data.synthetic.case import Case  # noqa: E402
from shared.io.atomic import atomic_path  # noqa: E402

_MAX_OBJECTS = 3
_DPI = 100


def _window(image: np.ndarray, modality: str) -> tuple[float, float]:
    if modality == "CT":
        return -1350.0, 150.0  # lung window: level -600, width 1500
    # a high upper bound: enhancing lesions are few voxels, and must not saturate with white matter
    return float(np.percentile(image, 1)), float(np.percentile(image, 99.95))


def save_case_preview(path: str | os.PathLike, case: Case, classes, modality: str, title: str) -> None:
    """Axial and coronal slices through (up to three) objects, per channel, with boxes and class names."""
    boxes, ids = boxes_from_instance_mask(case.instances)
    spacing = np.sqrt((case.affine[:3, :3] ** 2).sum(axis=0))
    centres = [((b[:3] + b[3:]) / 2).astype(int) for b in boxes[:_MAX_OBJECTS]]
    centres = centres or [np.array(case.instances.shape) // 2]
    channels = case.image.shape[0]
    figure, axes = plt.subplots(channels * 2, len(centres), figsize=(3.2 * len(centres), 3.2 * channels * 2),
                                squeeze=False)
    for column, centre in enumerate(centres):
        for channel in range(channels):
            image = case.image[channel]
            low, high = _window(image, modality)
            for row, (axis, aspect) in enumerate(((2, spacing[1] / spacing[0]), (1, spacing[2] / spacing[0]))):
                plot = axes[channel * 2 + row, column]
                section = np.take(image, centre[axis], axis=axis).T
                plot.imshow(section, cmap="gray", vmin=low, vmax=high, origin="lower", aspect=aspect)
                _draw_boxes(plot, boxes, ids, case.labels, classes, axis, centre[axis])
                view = "axial" if axis == 2 else "coronal"
                plot.set_title(f"{view} {'xyz'[axis]}={centre[axis]} ch{channel}", fontsize=8)
                plot.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=_DPI)
    plt.close(figure)


def _draw_boxes(plot, boxes, ids, labels, classes, axis: int, index: int) -> None:
    """Boxes cut by the slice; the slice plane is ``axis`` at voxel ``index``."""
    in_plane = [a for a in range(3) if a != axis]
    for box, instance in zip(boxes, ids):
        if not box[axis] <= index < box[axis + 3]:
            continue
        # box edges are voxel borders and imshow puts voxel centres on integers (hence - 0.5); drawn one
        # voxel wider on each side so the outline does not hide an object of a few voxels
        x0, y0 = box[in_plane[0]] - 1.5, box[in_plane[1]] - 1.5
        width, height = box[in_plane[0] + 3] - box[in_plane[0]] + 2, box[in_plane[1] + 3] - box[in_plane[1]] + 2
        plot.add_patch(Rectangle((x0, y0), width, height, fill=False, edgecolor="red", linewidth=0.8))
        plot.text(x0, y0 + height + 1, classes[labels[instance - 1]], color="yellow", fontsize=7)


def thumbnail(case: Case) -> Case:
    """The first channel's axial slice through the case's first object (else the middle): what
    :func:`save_mosaic` shows, small enough to keep for every case of a full-size data set."""
    boxes, _ = boxes_from_instance_mask(case.instances)
    index = int((boxes[0, 2] + boxes[0, 5]) / 2) if len(boxes) else case.instances.shape[2] // 2
    return Case(image=case.image[:1, ..., index:index + 1].copy(), affine=case.affine,
                instances=case.instances[..., index:index + 1].copy(), labels=list(case.labels))


def save_mosaic(path: str | os.PathLike, cases: list[tuple[str, Case]], classes, modality: str) -> None:
    """One axial slice per case (see :func:`thumbnail`), boxes drawn, in a grid."""
    columns = int(np.ceil(np.sqrt(max(len(cases), 1))))
    rows = int(np.ceil(max(len(cases), 1) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows), squeeze=False)
    for plot in axes.ravel():
        plot.axis("off")
    for plot, (name, case) in zip(axes.ravel(), cases):
        case = thumbnail(case) if case.instances.shape[2] > 1 else case
        boxes, ids = boxes_from_instance_mask(case.instances)
        index = 0
        image = case.image[0]
        low, high = _window(image, modality)
        spacing = np.sqrt((case.affine[:3, :3] ** 2).sum(axis=0))
        plot.imshow(image[..., index].T, cmap="gray", vmin=low, vmax=high, origin="lower",
                    aspect=spacing[1] / spacing[0])
        _draw_boxes(plot, boxes, ids, case.labels, classes, 2, index)
        plot.set_title(f"{name} ({len(case.labels)})", fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=_DPI)
    plt.close(figure)
