"""A classical baseline for ``lung_ct``: multi-scale Laplacian-of-Gaussian blobs inside a lung mask.

It sets the floor a learnt detector must beat, and checks that the data set is not too easy: blob
filters cannot tell a nodule from a vessel cut across, so a good synthetic lung task keeps this
baseline's AP@0.1 well below 0.5. The lung mask is a threshold (< -400 HU) without the air outside the
body (components touching the border with a mean below -950 HU), closed and hole-filled per slice
so nodules and juxta-pleural nodules stay inside. Class by size: at least :data:`MALIGNANT_MM` wide is
called malignant (LIDC's malignant nodules are larger).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from shared.boxes.convention import boxes_voxel_to_world

SIGMAS_MM = (1.5, 2.2, 3.2, 4.6, 6.5)  # blob radius is sigma * sqrt(3): about 2.6 .. 11 mm
MALIGNANT_MM = 10.0
MAX_DETECTIONS = 100


def lung_mask(hu: np.ndarray, spacing) -> np.ndarray:
    """(X, Y, Z) bool: the lungs of a CT in Hounsfield units, with what lies inside them."""
    air = hu < -400
    components, count = ndimage.label(air)
    if count:
        means = ndimage.mean(hu, components, index=np.arange(1, count + 1))
        border = np.unique(np.concatenate([components[[0, -1]].ravel(), components[:, [0, -1]].ravel()]))
        outside = [c for c in border if c and means[c - 1] < -950]
        air &= ~np.isin(components, outside)
    radius = np.maximum(np.round(4.0 / np.asarray(spacing)).astype(int), 1)
    structure = np.ones(tuple(2 * r + 1 for r in radius), dtype=bool)
    closed = ndimage.binary_closing(air, structure=structure, border_value=0) | air
    for z in range(closed.shape[2]):
        closed[..., z] = ndimage.binary_fill_holes(closed[..., z])
    return closed


def detect_blobs(hu: np.ndarray, affine: np.ndarray, *, threshold: float = 40.0) -> dict[str, np.ndarray]:
    """Scale-normalised LoG maxima over space and scale, inside the lung mask.

    Args:
        hu: (X, Y, Z) CT in Hounsfield units.
        affine: (4, 4) RAS affine of the scan.
        threshold: minimum scale-normalised response (HU) for a detection.

    Returns:
        ``box`` (N, 6) world cccwhd mm, ``label`` (N,) 0/1, ``label_scores`` (N,), best first.
    """
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    image = np.clip(hu.astype(np.float32), -1000, 200)
    responses = np.stack([-(s ** 2) * ndimage.gaussian_laplace(image, s / spacing) for s in SIGMAS_MM])
    peaks = responses == ndimage.maximum_filter(responses, size=(3, 3, 3, 3), mode="nearest")
    peaks &= (responses > threshold) & lung_mask(hu, spacing)[None]
    scale, *centre = np.nonzero(peaks)
    scores = responses[scale, *centre]
    order = np.argsort(-scores)[:MAX_DETECTIONS]
    centre = np.stack(centre, axis=1)[order].astype(np.float64)
    radius_mm = np.asarray(SIGMAS_MM)[scale[order]] * np.sqrt(3.0)
    half = radius_mm[:, None] / spacing[None]
    boxes = np.concatenate([centre + 0.5 - half, centre + 0.5 + half], axis=1)  # edges in index space
    return {"box": boxes_voxel_to_world(boxes, affine), "label": (2 * radius_mm >= MALIGNANT_MM).astype(int),
            "label_scores": scores[order].astype(np.float64)}


def average_precision_at(predictions: list[dict], truths: list[dict], num_classes: int, iou: float = 0.1) -> float:
    """COCO AP at one IoU threshold, mean over the classes that have ground truth, by MONAI's
    ``COCOMetric``. The project's evaluation is :mod:`shared.metrics` (``tools.evaluate``); this scorer
    shares no code with it, so it serves as an independent reference (the bundle tests compare the two).
    Boxes in world cccwhd: IoU does not change under the voxel → mm map.
    """
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch
    from monai.data.box_utils import CenterSizeMode, StandardMode, convert_box_mode

    def corners(boxes) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
        if not len(boxes):
            return boxes
        return np.asarray(convert_box_mode(boxes, src_mode=CenterSizeMode, dst_mode=StandardMode))

    metric = COCOMetric(classes=[str(c) for c in range(num_classes)], iou_list=[iou],
                        max_detection=[MAX_DETECTIONS], verbose=False)
    results = matching_batch(
        iou_fn=_box_iou, iou_thresholds=metric.iou_thresholds,
        pred_boxes=[corners(p["box"]) for p in predictions],
        pred_classes=[np.asarray(p["label"], dtype=int) for p in predictions],
        pred_scores=[np.asarray(p["label_scores"], dtype=float) for p in predictions],
        gt_boxes=[corners(t["box"]) for t in truths], gt_classes=[np.asarray(t["label"], dtype=int) for t in truths],
        max_detections=MAX_DETECTIONS)
    scores = metric(results)[0]
    per_class = [float(scores[f"{c}_AP_IoU_{iou:.2f}_MaxDet_{MAX_DETECTIONS}"]) for c in range(num_classes)]
    present = [value for value in per_class if value >= 0]  # COCOMetric gives -1 to a class with no ground truth
    return float(np.mean(present)) if present else 0.0


def _box_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyzxyz boxes, in numpy and local so that this scorer stays independent of ``shared``."""
    low = np.maximum(boxes[:, None, :3], others[None, :, :3])
    high = np.minimum(boxes[:, None, 3:], others[None, :, 3:])
    inter = np.clip(high - low, 0, None).prod(-1)
    volume = lambda b: np.prod(b[:, 3:] - b[:, :3], axis=1)  # noqa: E731
    return inter / (volume(boxes)[:, None] + volume(others)[None] - inter)
