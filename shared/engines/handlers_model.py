"""The weights a run publishes, under MONAI's bundle names.

``model.pt`` is the model to use: the best validated one (its key metric and all metrics in
``model_best.json``), or the final weights when nothing was validated. ``model_final.pt`` is always the
last weights. The best value lives in ``model_best.json`` beside the model, so it survives a resume;
every file is written whole (:func:`shared.io.atomic.save_torch`), on rank 0 only.
"""

from __future__ import annotations

import json
import logging
import math
import os
from numbers import Real
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from torch import nn

from shared.io.atomic import save_torch, write_json

logger = logging.getLogger(__name__)

#: the weights to use (MONAI's bundle convention): the best validated model, else the final one
MODEL_NAME = "model.pt"
BEST_RECORD = "model_best.json"
FINAL_NAME = "model_final.pt"


class ModelSaver:
    """Writes ``model.pt`` when the validator's key metric improves, and ``model_final.pt`` at the end.

    Attach it to the trainer; it listens to the validator's ``COMPLETED`` (each validation), so the
    best model is saved before the epoch's checkpoint (:mod:`shared.engines.handlers_checkpoint`).

    Args:
        output_dir: where the files go.
        network: the module whose state dict the files hold (the bare network a bundle's
            ``network_def`` builds, not the detector or its DDP wrapper).
        validator: the evaluator run by the validation handler (None: ``model.pt`` is the final weights).
        key_metric: the metric deciding the best model, higher is better; default the validator's key metric.
    """

    def __init__(self, output_dir: str | os.PathLike, network: nn.Module, *, validator: Engine | None = None,
                 key_metric: str | None = None):
        self.output_dir, self.network = Path(output_dir), network
        self.validator, self.key_metric = validator, key_metric
        self.trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self.trainer = engine
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self.validated)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        engine.add_event_handler(Events.TERMINATE, self.completed)  # early stopping ends a run too

    def best_metric(self) -> float:
        """The key metric of the saved best model (-inf when none was saved)."""
        record = self.output_dir / BEST_RECORD
        return json.loads(record.read_text())["value"] if record.exists() else -math.inf

    def validated(self, validator: Engine) -> None:
        """After a validation: log the key metric, and save the model if it is the best so far."""
        if idist.get_rank() != 0:
            return
        name = self.key_metric or validator.state.key_metric_name
        metrics = {key: float(value) for key, value in validator.state.metrics.items() if isinstance(value, Real)}
        score, best = metrics.get(name, float("nan")), self.best_metric()
        iteration = self.trainer.state.iteration if self.trainer is not None else validator.state.epoch
        logger.info("epoch %d validation %s = %.4f (best %.4f)", validator.state.epoch, name, score, best)
        if math.isfinite(score) and score > best:
            save_torch(self.network.state_dict(), self.output_dir / MODEL_NAME)
            # a class missing from the validation split has NaN metrics: null keeps the record strict JSON
            finite = {key: value if math.isfinite(value) else None for key, value in metrics.items()}
            write_json(self.output_dir / BEST_RECORD, {"key_metric": name, "value": score, "iteration": iteration,
                                                       "metrics": finite})

    def completed(self, engine: Any = None) -> None:
        """At the end (also of a finished run started again): the final weights, and ``model.pt`` if no best."""
        if idist.get_rank() != 0:
            return
        save_torch(self.network.state_dict(), self.output_dir / FINAL_NAME)
        if not (self.output_dir / BEST_RECORD).exists():
            save_torch(self.network.state_dict(), self.output_dir / MODEL_NAME)
