"""Detectors' planning from the training data, stored in the model plan under ``"detector"``.

A planning function takes the training boxes (N, 6) xyzxyz voxel at the training spacing and the
network's detection strides and returns a JSON-able dict; the data preparation calls the one a bundle
names (``data#plan_detector``) and records its result, and the detector reads it back
(``detector#anchor_sizes`` at training, :func:`planned_detector` at inference). A detector that needs
nothing from the data has no planning function, so data without any box is refused only by detectors
that need boxes to plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shared.detectors.anchor_fitting import fit_anchor_sizes
from shared.detectors.deformable_detr import objects_per_patch, plan_queries


def plan_retina_unet(training_boxes: np.ndarray, detection_strides: Sequence[int | Sequence[int]], *,
                     case_boxes: Sequence[np.ndarray] | None = None,
                     patch_size: Sequence[int] | None = None) -> dict[str, Any]:
    """Retina U-Net's plan: per-axis anchor sizes at the first detection level, fitted to the boxes.

    Args:
        training_boxes: (N, 6) xyzxyz voxel boxes of the training split at the training spacing.
        detection_strides: the network's detection strides, fine → coarse (ints, or one per axis).
        case_boxes, patch_size: the hook's other inputs (the boxes per case, the training patch), unused.

    Returns:
        ``{"anchor_sizes": [[w…], [h…], [d…]]}``, the keywords ``RetinaUNetDetector`` takes from the plan.

    Raises:
        ValueError: when there is no training box (the caller names the datalist).
    """
    boxes = np.asarray(training_boxes, dtype=np.float64).reshape(-1, 6)
    if not len(boxes):
        raise ValueError("the training split has no boxes: the Retina U-Net fits its anchor sizes to them; "
                         "add boxed cases to the training split")
    return {"anchor_sizes": fit_anchor_sizes(boxes, detection_strides)}


def plan_deformable_detr(training_boxes: np.ndarray, detection_strides: Sequence[int | Sequence[int]], *,
                         case_boxes: Sequence[np.ndarray], patch_size: Sequence[int], factor: float = 3.0,
                         percentile: float = 95.0, minimum: int = 16) -> dict[str, Any]:
    """Deformable DETR's plan: the number of object queries from the objects a training patch holds.

    ``num_queries = max(minimum, ceil(factor · percentile-th percentile))`` of the per-patch object counts
    that :func:`~shared.detectors.deformable_detr.objects_per_patch` estimates from the boxes per case
    (:func:`~shared.detectors.deformable_detr.plan_queries`). Data without boxes plans ``minimum``.

    Args:
        training_boxes, detection_strides: the hook's pooled boxes and the network's strides, unused.
        case_boxes: per training case its boxes ``(N_i, 6)`` xyzxyz voxel at the training spacing.
        patch_size: the training patch ``(X, Y, Z)``.
        factor, percentile, minimum: see :func:`~shared.detectors.deformable_detr.plan_queries`.

    Returns:
        ``{"num_queries": int}``, the network argument ``network_def`` reads from ``data.detector``.
    """
    return plan_queries(objects_per_patch(case_boxes, patch_size), factor=factor, percentile=percentile,
                        minimum=minimum)


def planned_detector(model_plan: Mapping[str, Any]) -> dict[str, Any]:
    """The detector's part of a model plan (its ``"detector"``), for plans written before it existed too.

    Older plans kept Retina U-Net's ``"anchor_sizes"`` at the top level; they are read as its plan.
    """
    if "detector" in model_plan and model_plan["detector"]:
        return dict(model_plan["detector"])
    if "anchor_sizes" in model_plan:
        return {"anchor_sizes": model_plan["anchor_sizes"]}
    return {}
