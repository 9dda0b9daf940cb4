"""Validation during training: MONAI's ``SupervisedEvaluator`` over whole preprocessed cases.

Each iteration is one case (``validate#dataloader``, batch size 1): the inferer (``validate#inferer``,
sliding-window detection over the whole volume) gives its boxes, and the key metric
(:class:`shared.metrics.ignite.DetectionMetrics`, AP at IoU 0.1) matches them against the case's
boxes. IoU does not change under the axis-aligned scaling between the preprocessed grid and world
millimetres, so predictions and ground truth are compared in the preprocessed voxel grid.

Under DDP each rank validates its share of the cases (the loader must not pad a rank's share with
repeated cases, which would count them twice) and the metric gathers them, so a rank without a case
still takes part in the gather.
"""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer
from torch import Tensor, nn


class CaseEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` that also runs on no cases (a rank's empty share, a data set without a
    validation split): its metrics are then computed on nothing, and gathered with the other ranks'.

    A key metric whose ``compute`` returns a dict (spread into ``state.metrics``) names the entry that
    is the key metric in its ``key_metric`` attribute.

    Args:
        as ``SupervisedEvaluator``.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        key_val_metric = kwargs.get("key_val_metric") or {}
        self._metrics = dict(key_val_metric) | dict(kwargs.get("additional_metrics") or {})
        if key_val_metric:
            metric = next(iter(key_val_metric.values()))
            self.state.key_metric_name = getattr(metric, "key_metric", self.state.key_metric_name)

    def run(self, global_epoch: int = 1) -> None:
        """Validate; a rank without a case of its own still computes (and so gathers) the metrics."""
        if self.state.epoch_length != 0:
            super().run(global_epoch)
            return
        self.state.max_epochs, self.state.epoch, self.state.iteration = max(global_epoch, 1), global_epoch, 0
        for name, metric in self._metrics.items():
            metric.reset()
            metric.completed(self, name)
        self.fire_event(Events.COMPLETED)


class DetectionEvaluator(CaseEvaluator):
    """``SupervisedEvaluator`` whose iteration detects the objects of one whole case.

    Args:
        device, val_data_loader, network, inferer, key_val_metric, additional_metrics, val_handlers,
            amp, epoch_length: as in ``SupervisedEvaluator``. ``network`` is the bare detector (not its
            DDP wrapper); ``inferer(images (1, C, X, Y, Z), network) -> {"boxes": (M, 6) xyzxyz voxel,
            "scores": (M,), "labels": (M,)}``; ``key_val_metric`` is ``{name: DetectionMetrics}``,
            whose dict of results is spread into ``state.metrics`` and whose ``key_metric``
            (``AP_IoU_0.10_MaxDet_100``) becomes the key metric name.

    The iteration's output is ``([found], [target])``, what ``DetectionMetrics.update`` takes; batch
    items: ``"image"`` (1, C, X, Y, Z), ``"boxes"`` (1, N, 6) or a list of one (N, 6), ``"labels"``
    likewise (or one uncollated case: (C, X, Y, Z), (N, 6), (N,)).
    """

    def __init__(self, device: str | torch.device, val_data_loader: Any, network: nn.Module, *,
                 inferer: Inferer, key_val_metric: dict[str, Any] | None = None, **kwargs: Any):
        device = torch.device(device)
        kwargs["amp"] = bool(kwargs.get("amp", False)) and device.type == "cuda"
        super().__init__(device=device, val_data_loader=val_data_loader, network=network, inferer=inferer,
                         key_val_metric=key_val_metric, decollate=kwargs.pop("decollate", False), **kwargs)

    def _iteration(self, engine: DetectionEvaluator, batchdata: dict[str, Any]) -> tuple[list, list]:
        images, collated = batchdata["image"], batchdata["image"].ndim == 5
        if not collated:  # one case straight from its dataset
            images = images[None]
        images = images.to(engine.state.device, dtype=torch.float32)
        engine.network.eval()
        with torch.no_grad(), torch.autocast("cuda", enabled=engine.amp):
            found = engine.inferer(images, engine.network)
        target = {key: torch.as_tensor(batchdata[key][0] if collated else batchdata[key]).cpu()
                  for key in ("boxes", "labels")}
        engine.state.output = ([{key: value.detach().cpu() for key, value in found.items()}], [target])
        return engine.state.output

