"""The paper's learning-rate schedule as a pure function of the iteration, so resuming needs no state.

Fine-tuning (appendix C.3; nnDetection's ``sgd_base_warmupdecoder_heads``) runs in two phases. The
freeze phase (``freeze_iterations``) trains the decoder and heads only, its rate ramping linearly over
the whole phase (nnDetection's ``iterations_warmup`` equals the phase). Then the whole network trains
with a linear LR warm-up over ``lr_warmup_iterations`` and a poly decay to zero at ``total_iterations``.
"LR warm-up" is only that ramp; the freeze phase is always called "freeze".

:class:`PolyLearningRate` is the trainer handler (``train#handlers``) that sets it before each iteration
and, given a ``log_dir``, logs it to TensorBoard (``train/learning_rate``) like the losses.
"""

from __future__ import annotations

import os

import torch


def learning_rate_at(
    iteration: int,
    *,
    base_lr: float,
    total_iterations: int,
    lr_warmup_iterations: int = 0,
    freeze_iterations: int = 0,
    exponent: float = 0.9,
) -> float:
    """Learning rate for a 0-based ``iteration``.

    Args:
        iteration: the iteration about to run, 0-based.
        base_lr: the rate reached after the ramps.
        total_iterations: the length of the whole run, freeze phase included; the rate reaches zero there.
        lr_warmup_iterations: linear ramp at the start of the full-network phase (clipped to it).
        freeze_iterations: length of the first (frozen-encoder) phase, which ramps over all of it;
            0 for a single phase.
        exponent: the poly exponent.
    """
    if total_iterations <= 0:
        raise ValueError(f"total_iterations must be positive, got {total_iterations}")
    if iteration < freeze_iterations:
        return base_lr * (iteration + 1) / freeze_iterations
    step = iteration - freeze_iterations
    phase_length = total_iterations - freeze_iterations
    warmup = min(lr_warmup_iterations, phase_length)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    decay_length = max(1, phase_length - warmup)
    return base_lr * max(0.0, 1.0 - (step - warmup) / decay_length) ** exponent


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    """Set every parameter group's rate; groups may carry a ``lr_scale`` (e.g. a slower encoder)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * group.get("lr_scale", 1.0)


class PolyLearningRate:
    """Trainer handler: sets :func:`learning_rate_at` the iteration about to run (``ITERATION_STARTED``).

    Being a function of the iteration, the rate needs no state of its own to resume. With a ``log_dir``
    the rate of the first parameter group is written to TensorBoard as ``train/learning_rate`` every
    ``log_every`` iterations (by the first rank only, as the bundles' TensorBoard handler).

    Args:
        base_lr, total_iterations, lr_warmup_iterations, freeze_iterations, exponent: as in
            :func:`learning_rate_at`.
        log_dir: TensorBoard folder (the bundles' ``output_dir/logs``); None logs nothing.
        log_every: iterations between two logged rates.
    """

    def __init__(self, base_lr: float, total_iterations: int, *, lr_warmup_iterations: int = 0,
                 freeze_iterations: int = 0, exponent: float = 0.9, log_dir: str | os.PathLike | None = None,
                 log_every: int = 10):
        if total_iterations <= 0:
            raise ValueError(f"total_iterations must be positive, got {total_iterations}")
        if log_every <= 0:
            raise ValueError(f"log_every must be positive, got {log_every}")
        self.schedule = dict(base_lr=float(base_lr), total_iterations=int(total_iterations),
                             lr_warmup_iterations=int(lr_warmup_iterations),
                             freeze_iterations=int(freeze_iterations), exponent=float(exponent))
        self.log_dir, self.log_every = log_dir, int(log_every)
        self.writer = None

    def __call__(self, engine) -> None:
        set_learning_rate(engine.optimizer, learning_rate_at(engine.state.iteration - 1, **self.schedule))

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_STARTED, self)
        if self.log_dir is not None and _is_first_rank():
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.log_every), self.log)
            engine.add_event_handler(Events.COMPLETED, self.close)

    def log(self, engine) -> None:
        """Write the rate the iteration ran with (the first parameter group's, ``lr_scale`` included)."""
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.writer.add_scalar("train/learning_rate", engine.optimizer.param_groups[0]["lr"], engine.state.iteration)

    def close(self, engine=None) -> None:
        """Flush and close the event file (at the end of the run)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _is_first_rank() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
