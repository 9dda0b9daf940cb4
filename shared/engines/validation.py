"""Sliding-window detections of whole cached cases with their ground truth, for tools that score a
detector outside the training engine (e.g. ``tools.benchmarks.learning_probe``).

Validation during training is :class:`shared.engines.evaluator.DetectionEvaluator` (the bundles'
``validate#evaluator``); both use the detector only through its interface (``predict``,
:mod:`shared.detectors.interface`), by the same inferer as inference
(:class:`shared.inference.inferer.SlidingWindowDetectionInferer`).

IoU does not change under the axis-aligned scaling between the cached grid and world millimetres, so
predictions and ground truth are compared in the cached voxel grid directly.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn


@torch.no_grad()
def predict_cases(
    detector: nn.Module,
    dataset: Sequence[dict[str, Any]],
    inferer: Any,
    *,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[dict[str, Tensor], dict[str, Tensor]]]:
    """Sliding-window detections of each whole case, with its ground truth: the loop every scorer shares.

    Args:
        detector: a detector of the interface (or a list of them), what ``inferer`` takes.
        dataset: cases ``{"image": (C, X, Y, Z), "boxes": (N, 6), "labels": (N,)}``, e.g. a
            :class:`shared.data.dataset.ValidationCaseDataset`.
        inferer: e.g. :class:`shared.inference.inferer.SlidingWindowDetectionInferer`.
        device: where the images go (the detector's device).

    Yields:
        ``(found, target)`` per case, on the CPU: ``found`` ``{"boxes": (M, 6) xyzxyz voxel, "scores": (M,),
        "labels": (M,)}``, ``target`` ``{"boxes": (N, 6), "labels": (N,)}``, both in the cached grid.
    """
    for index in range(len(dataset)):
        case = dataset[index]
        image = torch.as_tensor(case["image"], dtype=torch.float32, device=device)
        result = inferer(image[None], detector)
        target = {"boxes": torch.as_tensor(case["boxes"]), "labels": torch.as_tensor(case["labels"])}
        yield {key: value.cpu() for key, value in result.items()}, target
