"""The trainer every bundle uses: MONAI's ``SupervisedTrainer`` with the detector's iteration.

The iteration is a model that returns its own losses (a detector given images and targets, a masked
autoencoder given images): forward, a finite-loss check, backward, gradient clipping, optimizer step;
mixed precision only on CUDA (autocast on the CPU breaks MONAI's losses). Everything else is a handler
listed in the bundle's ``train#handlers`` (:mod:`shared.engines.handlers_checkpoint`,
:mod:`shared.engines.handlers_model`, :mod:`shared.engines.handlers_validation`,
:mod:`shared.engines.handlers_progress`, :class:`shared.engines.schedule.PolyLearningRate`,
:class:`shared.engines.freeze.FreezePhase`, MONAI's stats and TensorBoard handlers), so a user adds or
removes one from the command line. ``docs/training.md`` lists them.

Events the iteration fires, in order (MONAI's ``IterationEvents``): ``FORWARD_COMPLETED`` (the raw model
output is ``engine.state.output["pred"]``, the images ``engine.state.output["image"]``; the masked
autoencoder's previews read them), ``BACKWARD_COMPLETED`` (gradients reduced across ranks, not yet
clipped or applied: the freeze phase drops the frozen parameters' gradients here) and
``MODEL_COMPLETED``. The iteration's output is then the dict of scalar losses as floats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.engines.workflow import Workflow
from monai.utils.enums import CommonKeys
from torch import nn


def prepare_detection_batch(batch: dict[str, Any], device: str | torch.device | None = None,
                            non_blocking: bool = False, **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """A detector's inputs: images, and targets ``{"boxes": [(N_i, 6)], "labels": [(N_i,)], "seg"?}``.

    Shape:
        batch["image"]: (B, C, X, Y, Z); batch["seg"] (optional): (B, 1, X, Y, Z); boxes xyzxyz voxel.
    """
    def move(value: torch.Tensor) -> torch.Tensor:
        return value.to(device, non_blocking=non_blocking)

    targets = {"boxes": [move(boxes) for boxes in batch["boxes"]],
               "labels": [move(labels) for labels in batch["labels"]]}
    if "seg" in batch:
        targets["seg"] = move(batch["seg"])
    return move(batch["image"]), targets


def prepare_image_batch(batch: dict[str, Any], device: str | torch.device | None = None,
                        non_blocking: bool = False, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """A self-supervised model's input: the images alone (no targets)."""
    return batch["image"].to(device, non_blocking=non_blocking), None


class LossDictTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose network returns its losses as a dict with a ``"loss"`` entry.

    Args:
        device, max_epochs, train_data_loader, network, optimizer, epoch_length, inferer,
            train_handlers, key_train_metric, amp, iteration_update: as in ``SupervisedTrainer``;
            ``network`` may be wrapped in ``DistributedDataParallel``; ``amp`` is honoured on CUDA only.
            An endless ``train_data_loader`` needs ``epoch_length``; a batch sampler with a
            ``start_iteration`` (:class:`shared.engines.sampler.ResumableBatchSampler`) is moved to the
            engine's iteration at each epoch's start, so a resumed run sees the batches it would have.
        prepare_batch: ``(batch, device, non_blocking) -> (inputs, targets)``; targets ``None`` calls
            the network with the inputs alone (:func:`prepare_image_batch`).
        loss_function: unused (the network computes its losses); kept for ``SupervisedTrainer``'s signature.
        gradient_clip: max gradient norm over all parameters (None or 0: off).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable | None = None,
        epoch_length: int | None = None,
        *,
        prepare_batch: Callable = prepare_detection_batch,
        gradient_clip: float | None = 12.0,
        amp: bool = False,
        train_handlers: Sequence | None = None,
        **kwargs: Any,
    ):
        device = torch.device(device)
        amp = bool(amp) and device.type == "cuda"
        # the output is a dict of floats: nothing to decollate
        super().__init__(device=device, max_epochs=max_epochs, train_data_loader=train_data_loader, network=network,
                         optimizer=optimizer, loss_function=loss_function, epoch_length=epoch_length,
                         prepare_batch=prepare_batch, amp=amp, train_handlers=train_handlers,
                         decollate=kwargs.pop("decollate", False), optim_set_to_none=True, **kwargs)
        self.gradient_clip = gradient_clip
        # created here rather than in run() (as MONAI's trainer does), so a checkpoint can restore it
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp)
        self.add_event_handler(Events.EPOCH_STARTED, self._move_sampler)

    def run(self) -> None:
        """Train (MONAI's ``Trainer.run`` would replace the scaler a checkpoint restored)."""
        Workflow.run(self)

    def _move_sampler(self, engine: LossDictTrainer) -> None:
        sampler = getattr(self.data_loader, "batch_sampler", None)
        if hasattr(sampler, "start_iteration"):
            sampler.start_iteration = engine.state.iteration

    def _iteration(self, engine: LossDictTrainer, batchdata: dict[str, Any]) -> dict[str, float]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        inputs, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
        arguments = () if targets is None else (targets,)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=engine.amp, **engine.amp_kwargs):
            outputs = engine.inferer(inputs, engine.network, *arguments)
        engine.state.output = {CommonKeys.IMAGE: inputs, CommonKeys.PRED: outputs}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss = outputs["loss"]
        if not torch.isfinite(loss):
            losses = {name: float(value) for name, value in _scalars(outputs).items()}
            raise FloatingPointError(f"loss is {loss.detach().item()} at iteration {engine.state.iteration}: {losses}")
        engine.scaler.scale(loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if engine.gradient_clip:
            engine.scaler.unscale_(engine.optimizer)
            torch.nn.utils.clip_grad_norm_(engine.network.parameters(), engine.gradient_clip)
        engine.scaler.step(engine.optimizer)
        engine.scaler.update()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return {name: float(value.detach()) for name, value in _scalars(outputs).items()}


def _scalars(outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The losses among a model's outputs (a masked autoencoder also returns its mask and reconstruction)."""
    return {name: value for name, value in outputs.items() if isinstance(value, torch.Tensor) and value.ndim == 0}


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (or the module itself)."""
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
