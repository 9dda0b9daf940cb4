"""The ignite trainer every bundle uses: iteration-based epochs, the paper's schedule, AMP where the
device has it, gradient clipping, checkpoints every N iterations with exact resume, TensorBoard, a
progress bar, validation with best-model saving.

Resume: a run started again in the same ``output_dir`` continues from its last checkpoint and ends
with the same weights and files as a run never interrupted, wherever the kill came (mid-epoch, while
a checkpoint, ``model.pt`` or ``model_final.pt`` was written, during a validation): a checkpoint is
written whole beside the previous one, which is deleted only then, and an epoch's checkpoint is written
after that epoch's validation. A finished run started again says so and only writes its final weights
again; a raised ``max_epochs`` trains on from the last checkpoint.

The model is any ``nn.Module`` whose forward returns a dict of losses with a ``"loss"`` entry (a
detector given images and targets, a masked autoencoder given images); ``forward`` adapts a batch.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from torch import nn

from shared.checkpoints.safe_load import read_checkpoint
from shared.engines.schedule import learning_rate_at, set_learning_rate
from shared.io.atomic import TEMPORARY_PATTERNS, remove_orphaned_temporaries, save_torch, write_json
from shared.io.errors import InputError

logger = logging.getLogger(__name__)

LAST_PREFIX = "last"
#: the weights to use (MONAI's bundle convention): the best validated model, else the final one
MODEL_NAME = "model.pt"
BEST_RECORD = "model_best.json"
FINAL_NAME = "model_final.pt"
CHECKPOINT_FOLDER = "checkpoints"
#: temporaries a killed checkpoint write leaves: ours, and ignite's ``DiskSaver`` (earlier versions)
CHECKPOINT_TEMPORARIES = (*TEMPORARY_PATTERNS, "tmp*")


def detection_forward(model: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Detector step: images and their targets (boxes, labels, segmentation) go in."""
    targets = {
        "boxes": [boxes.to(device) for boxes in batch["boxes"]],
        "labels": [labels.to(device) for labels in batch["labels"]],
    }
    if "seg" in batch:
        targets["seg"] = batch["seg"].to(device)
    return model(batch["image"].to(device), targets)


def image_forward(model: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Self-supervised step: only the images go in."""
    return model(batch["image"].to(device))


class Trainer:
    """Runs training to ``max_epochs`` and resumes from the last checkpoint in ``output_dir``.

    Args:
        model: module returning a loss dict with ``"loss"``; may be wrapped in DDP.
        optimizer: built over the model's parameters.
        data_loader: endless loader; if its batch sampler has ``start_iteration`` it is moved on resume.
        output_dir: checkpoints go to ``output_dir/checkpoints``, TensorBoard logs to ``output_dir/logs``.
        iterations_per_epoch, max_epochs: the run's length.
        base_lr, lr_warmup_iterations, freeze_iterations, poly_exponent: the schedule
            (:func:`shared.engines.schedule.learning_rate_at`).
        forward: ``(model, batch, device) -> losses``; defaults to :func:`detection_forward`.
        device: where the model lives; amp: mixed precision, only honoured on CUDA.
        gradient_clip: max gradient norm (None: off).
        checkpoint_every: iterations between "last" checkpoints (also written at each epoch end).
        validate: ``(model) -> metrics`` run every ``validate_every`` epochs on every rank (each rank
            validates its share; see :class:`shared.engines.validation.DetectionValidator`).
        key_metric: metric deciding the best model, saved as ``output_dir/model.pt`` with its metrics
            in ``model_best.json``; the last weights go to ``model_final.pt`` (and to ``model.pt`` when
            nothing was validated).
        save_module: the module whose state dict those files hold (e.g. the bare network of a
            detector, so a bundle's ``network_def`` loads it); default the model.
        iteration_handlers: callables ``(engine)`` run at the start of each iteration (the fine-tuning freeze phase).
        progress: show a progress bar.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: Any,
        *,
        output_dir: str | Path,
        iterations_per_epoch: int,
        max_epochs: int,
        base_lr: float,
        lr_warmup_iterations: int = 0,
        freeze_iterations: int = 0,
        poly_exponent: float = 0.9,
        forward: Callable[[nn.Module, dict, torch.device], dict] = detection_forward,
        device: str | torch.device = "cpu",
        amp: bool = False,
        gradient_clip: float | None = 12.0,
        checkpoint_every: int = 500,
        validate: Callable[[nn.Module], dict[str, float]] | None = None,
        validate_every: int = 1,
        key_metric: str = "AP_IoU_0.10_MaxDet_100",
        iteration_handlers: Sequence[Callable[[Engine], None]] = (),
        progress: bool = True,
        save_module: nn.Module | None = None,
    ):
        self.model, self.optimizer, self.data_loader = model, optimizer, data_loader
        self.output_dir = Path(output_dir)
        self.iterations_per_epoch, self.max_epochs = iterations_per_epoch, max_epochs
        self.device = torch.device(device)
        self.amp = bool(amp) and self.device.type == "cuda"  # autocast on CPU crashes MONAI's losses
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.forward, self.gradient_clip = forward, gradient_clip
        self.total_iterations = total = iterations_per_epoch * max_epochs
        self.schedule = dict(base_lr=base_lr, total_iterations=total, lr_warmup_iterations=lr_warmup_iterations,
                             freeze_iterations=freeze_iterations, exponent=poly_exponent)
        self.save_module = save_module
        self.engine = Engine(self._step)
        self._writer = None
        self._attach(checkpoint_every, validate, validate_every, key_metric, iteration_handlers, progress)

    # -- the step -------------------------------------------------------------------------------------
    def _step(self, engine: Engine, batch: dict[str, Any]) -> dict[str, float]:
        self.model.train()
        set_learning_rate(self.optimizer, learning_rate_at(engine.state.iteration - 1, **self.schedule))
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            losses = self.forward(self.model, batch, self.device)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at iteration {engine.state.iteration}: {losses}")
        self.scaler.scale(loss).backward()
        if self.gradient_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.gradient_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {name: float(value.detach()) for name, value in losses.items()}

    # -- handlers -------------------------------------------------------------------------------------
    def _attach(self, checkpoint_every, validate, validate_every, key_metric, iteration_handlers, progress):
        engine = self.engine
        for handler in iteration_handlers:
            engine.add_event_handler(Events.ITERATION_STARTED, handler)
        engine.add_event_handler(Events.STARTED, self._move_sampler)
        if validate is not None:  # every rank validates its share; the metrics gather across ranks
            # every validate_every epochs and always after the last one, so a run always has a best model
            def due(engine: Engine, epoch: int) -> bool:
                return epoch % validate_every == 0 or epoch == engine.state.max_epochs

            engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=due), self._validate, validate, key_metric)

        # an epoch's checkpoint is saved after its validation (registered later, so called later): a
        # checkpoint at an epoch's end then means that epoch is complete, validation included
        def within_epoch(engine: Engine, iteration: int) -> bool:
            return iteration % checkpoint_every == 0 and iteration % self.iterations_per_epoch != 0

        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=within_epoch), self.save_checkpoint)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save_checkpoint)
        if idist.get_rank() == 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=10), self._log_losses)
            if progress:
                from ignite.handlers import ProgressBar

                ProgressBar(persist=True).attach(engine, output_transform=lambda output: {"loss": output["loss"]})
        engine.add_event_handler(Events.COMPLETED, self._close)

    def _state_objects(self) -> dict[str, Any]:
        objects = {"model": _unwrap(self.model), "optimizer": self.optimizer, "trainer": self.engine}
        if self.amp:
            objects["scaler"] = self.scaler
        return objects

    def save_checkpoint(self, engine: Engine) -> Path:
        """Write ``checkpoints/last_checkpoint_<iteration>.pt`` whole, then delete the older ones, so a
        kill at any moment leaves at least one complete checkpoint."""
        path = self.output_dir / CHECKPOINT_FOLDER / f"{LAST_PREFIX}_checkpoint_{engine.state.iteration}.pt"
        state = {name: item.state_dict() for name, item in self._state_objects().items()}
        if idist.get_rank() == 0:
            save_torch(state, path)
            self._remove_older_checkpoints()
        return path

    def _remove_older_checkpoints(self) -> None:
        for stale in self._checkpoints()[:-1]:
            stale.unlink(missing_ok=True)

    def _move_sampler(self, engine: Engine) -> None:
        sampler = getattr(self.data_loader, "batch_sampler", None)
        if hasattr(sampler, "start_iteration"):
            sampler.start_iteration = engine.state.iteration

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.output_dir / "logs"))
        return self._writer

    def _log_losses(self, engine: Engine) -> None:
        for name, value in engine.state.output.items():
            self.writer.add_scalar(f"train/{name}", value, engine.state.iteration)
        self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], engine.state.iteration)

    def _validate(self, engine: Engine, validate, key_metric: str) -> None:
        metrics = validate(_unwrap(self.model))
        engine.state.metrics.update(metrics)
        if idist.get_rank() != 0:
            return
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"validation/{name}", value, engine.state.iteration)
        score = metrics.get(key_metric, float("nan"))
        best = self.best_metric()
        logger.info("epoch %d validation %s = %.4f (best %.4f)", engine.state.epoch, key_metric, score, best)
        if math.isfinite(score) and score > best:
            self._save_weights(MODEL_NAME)
            write_json(self.output_dir / BEST_RECORD, {"key_metric": key_metric, "value": score,
                                                       "iteration": engine.state.iteration, "metrics": metrics})

    def best_metric(self) -> float:
        """The key metric of the saved best model; survives a resume because it lives beside the model."""
        record = self.output_dir / BEST_RECORD
        return json.loads(record.read_text())["value"] if record.exists() else -math.inf

    def _save_weights(self, name: str) -> None:
        module = self.save_module if self.save_module is not None else _unwrap(self.model)
        if idist.get_rank() == 0:
            save_torch(module.state_dict(), self.output_dir / name)

    def _close(self, engine: Engine) -> None:
        self._save_weights(FINAL_NAME)
        if not (self.output_dir / BEST_RECORD).exists():
            self._save_weights(MODEL_NAME)
        if self._writer is not None:
            self._writer.close()

    # -- running --------------------------------------------------------------------------------------
    def _checkpoints(self) -> list[Path]:
        found = (self.output_dir / CHECKPOINT_FOLDER).glob(f"{LAST_PREFIX}_checkpoint_*.pt")
        return sorted((path for path in found if path.stem.rsplit("_", 1)[-1].isdigit()),
                      key=lambda path: int(path.stem.rsplit("_", 1)[-1]))

    def last_checkpoint(self) -> Path | None:
        found = self._checkpoints()
        return found[-1] if found else None

    def run(self, resume: bool = True) -> Engine:
        """Train to the end, first loading the last checkpoint in ``output_dir`` if ``resume``.

        A run whose last checkpoint is already at the end writes its final weights again (they may be
        missing after a kill) and returns without training.
        """
        if idist.get_rank() == 0:
            remove_orphaned_temporaries(self.output_dir)
            remove_orphaned_temporaries(self.output_dir / CHECKPOINT_FOLDER, CHECKPOINT_TEMPORARIES)
            self._remove_older_checkpoints()  # a kill between writing a checkpoint and deleting the older one
        checkpoint = self.last_checkpoint() if resume else None
        if checkpoint is not None:
            logger.info("resuming from %s", checkpoint)
            self._load_checkpoint(checkpoint)
            if self.engine.state.iteration >= self.total_iterations:
                logger.info("training finished before (%s is at iteration %d of %d): nothing to train; to train "
                            "again from nothing delete %s, to train longer raise the epochs", checkpoint,
                            self.engine.state.iteration, self.total_iterations, checkpoint.parent)
                self._close(self.engine)
                return self.engine
        self.engine.run(self.data_loader, max_epochs=self.max_epochs, epoch_length=self.iterations_per_epoch)
        return self.engine

    def _load_checkpoint(self, checkpoint: Path) -> None:
        """Load a "last" checkpoint into the model, optimizer and engine; a file that cannot be resumed
        from is one clear error naming it."""
        advice = (f"delete it (or the whole {checkpoint.parent.name} folder) to train this run again from nothing "
                  "(tools.pipeline: --force True)")
        try:
            state = read_checkpoint(checkpoint)
        except InputError as error:
            reason = _first_line(error.problem).split(". ")[0]  # not read_checkpoint's advice to re-save weights
            raise InputError(checkpoint, f"cannot resume from this checkpoint (it {reason}); {advice}") from None
        try:
            Checkpoint.load_objects(self._state_objects(), state)
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise InputError(checkpoint, "cannot resume from this checkpoint, it was written by another kind of "
                                         f"run or configuration ({_first_line(str(error))}); {advice}") from None
        if self.engine.state.iteration > self.total_iterations:
            raise InputError(checkpoint, f"is at iteration {self.engine.state.iteration}, past this run's "
                                         f"{self.total_iterations} "
                                         f"({self.max_epochs} epochs of {self.iterations_per_epoch}): raise the "
                                         f"epochs, or {advice}")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
