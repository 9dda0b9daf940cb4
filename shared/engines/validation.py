"""Validation during training: sliding-window detection on whole cached validation cases, scored with
the project's detection metrics (key metric AP@IoU 0.1).

The detector is used only through its interface (``predict``, :mod:`shared.detectors.interface`), by
the same inferer as inference (:class:`shared.inference.inferer.SlidingWindowDetectionInferer`).

IoU does not change under the axis-aligned scaling between the cached grid and world millimetres, so
predictions and ground truth are compared in the cached voxel grid directly.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import ignite.distributed as idist
import torch
from torch import Tensor, nn

from shared.data.dataset import ValidationCaseDataset
from shared.inference.inferer import SlidingWindowDetectionInferer
from shared.metrics.ignite import DetectionMetrics


class DetectionValidator:
    """Callable ``(detector) -> metrics`` for :class:`shared.engines.trainer.Trainer`.

    Args:
        cache_dir: the preprocessed cache; cases: the validation case ids in it.
        class_names: one name per class (metric keys are prefixed with them).
        patch_size: sliding-window tile size, as in training (when no ``inferer`` is given).
        inference: the inferer's settings, keyword arguments of
            :func:`shared.inference.sliding_window.predict_volume` (overlap, mirror, batch_size,
            score_threshold, ...), when no ``inferer`` is given.
        inferer: ``inferer(images (1, C, X, Y, Z), detector) -> {"boxes", "scores", "labels"}``; default a
            :class:`SlidingWindowDetectionInferer` of ``patch_size`` and ``inference``.
        device: where to run.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        cases: Sequence[str],
        *,
        class_names: Sequence[str],
        patch_size: Sequence[int] | None = None,
        inference: dict[str, Any] | None = None,
        inferer: Any = None,
        device: str | torch.device = "cpu",
    ):
        if not len(cases):
            raise ValueError(f"no validation cases in {cache_dir}: validation needs at least one")
        # in distributed runs each rank takes every world_size-th case; DetectionMetrics gathers them
        self.dataset = ValidationCaseDataset(cache_dir, list(cases)[idist.get_rank()::idist.get_world_size()])
        self.class_names = list(class_names)
        if inferer is None:
            if patch_size is None:
                raise ValueError("DetectionValidator needs an inferer or the patch_size of one")
            inferer = SlidingWindowDetectionInferer(patch_size, inference)
        self.inferer = inferer
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, detector: nn.Module) -> dict[str, float]:
        metric = DetectionMetrics(self.class_names)
        for found, target in predict_cases(detector, self.dataset, self.inferer, device=self.device):
            metric.update(([found], [target]))
        return metric.compute()


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
