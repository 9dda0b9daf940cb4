"""An ignite metric for validation during training: the detection metrics of :mod:`detection_metrics`.

Each ``update`` matches one batch right away and keeps only the small per-detection match record, so
memory grows with the number of detections, not boxes x objects. In distributed runs ``compute``
gathers every rank's records (``ignite.distributed.all_gather`` of Python objects), so every rank
returns the metrics of the whole validation set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced

from shared.metrics.detection_metrics import (
    IOU_RANGE,
    KEY_METRIC,
    compute_detection_metrics,
    matching_thresholds,
)
from shared.metrics.matching import match_detections
from shared.metrics.records import MatchRecord, concatenate_records

__all__ = ["DetectionMetrics"]


def _numpy(value: Any, dtype: type, width: int | None = None) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=dtype)
    return array.reshape(-1, width) if width else array.reshape(-1)


class DetectionMetrics(Metric):
    """AP/mAP/AR/mAR/FROC of boxes against ground truth, accumulated over an epoch.

    ``update((predictions, targets))`` takes two equally long lists with one dict per image:
    predictions ``{"boxes": (N, 6) xyzxyz, "labels": (N,), "scores": (N,)}`` and targets
    ``{"boxes": (M, 6), "labels": (M,)}`` (torch tensors or numpy arrays; optional target
    ``"ignore"`` (M,) bool). ``compute()`` returns the dict of
    :func:`~shared.metrics.detection_metrics.compute_detection_metrics`; the key metric is
    :attr:`key_metric` (``AP_IoU_0.10_MaxDet_100``).

    Args:
        class_names: one name per class.
        iou_list: thresholds with their own AP/AR keys.
        iou_range: ``(start, stop, step)`` of mAP/mAR, or ``None``.
        froc_iou_thresholds: thresholds with FROC keys.
        max_detections: detections per image and class.
        output_transform: maps the engine output to ``(predictions, targets)``.
        device: ignite's device argument (the state itself lives on the CPU).
    """

    key_metric = KEY_METRIC

    def __init__(
        self,
        class_names: Sequence[str],
        *,
        iou_list: Sequence[float] = (0.1, 0.5, 0.75),
        iou_range: Sequence[float] | None = IOU_RANGE,
        froc_iou_thresholds: Sequence[float] = (0.1,),
        max_detections: int = 100,
        output_transform: Callable = lambda output: output,
        device: str | torch.device = "cpu",
    ) -> None:
        self.class_names = list(class_names)
        self.iou_list = tuple(iou_list)
        self.iou_range = None if iou_range is None else tuple(iou_range)
        self.froc_iou_thresholds = tuple(froc_iou_thresholds)
        self.max_detections = int(max_detections)
        self._thresholds = matching_thresholds(self.iou_list, self.iou_range, self.froc_iou_thresholds)
        self._records: list[MatchRecord] = []
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._records = []

    @reinit__is_reduced
    def update(self, output: tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]) -> None:
        predictions, targets = output
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} prediction dicts for {len(targets)} target dicts.")
        ignore = [
            _numpy(t["ignore"], bool) if "ignore" in t else np.zeros(len(_numpy(t["labels"], np.int64)), bool)
            for t in targets
        ]
        record = match_detections(
            [_numpy(p["boxes"], np.float64, 6) for p in predictions],
            [_numpy(p["labels"], np.int64) for p in predictions],
            [_numpy(p["scores"], np.float64) for p in predictions],
            [_numpy(t["boxes"], np.float64, 6) for t in targets],
            [_numpy(t["labels"], np.int64) for t in targets],
            ignore,
            num_classes=len(self.class_names),
            iou_thresholds=self._thresholds,
            max_detections=self.max_detections,
        )
        self._records.append(record)

    def compute(self) -> dict[str, float]:
        local = self._local_record()
        if idist.get_world_size() > 1:
            gathered = idist.all_gather(dataclasses.asdict(local))
            local = concatenate_records([MatchRecord(**fields) for fields in gathered])
        return compute_detection_metrics(
            local,
            self.class_names,
            iou_list=self.iou_list,
            iou_range=self.iou_range,
            froc_iou_thresholds=self.froc_iou_thresholds,
        )

    def _local_record(self) -> MatchRecord:
        if self._records:
            return concatenate_records(self._records)
        return match_detections(
            [], [], [], [], [], num_classes=len(self.class_names), iou_thresholds=self._thresholds,
            max_detections=self.max_detections,
        )
