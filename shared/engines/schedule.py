"""The paper's learning-rate schedule as a pure function of the iteration, so resuming needs no state.

Fine-tuning (appendix C.3) runs in two phases: for the first ``freeze_iterations`` only what was not
transferred trains; then the whole network trains with a linear warm-up over ``warmup_iterations`` and
a poly decay to zero at ``total_iterations``. The first phase uses the same linear warm-up, restarted,
so freshly initialised heads do not see the full rate on their first step.
"""

from __future__ import annotations

import torch


def learning_rate_at(
    iteration: int,
    *,
    base_lr: float,
    total_iterations: int,
    warmup_iterations: int = 0,
    freeze_iterations: int = 0,
    exponent: float = 0.9,
) -> float:
    """Learning rate for a 0-based ``iteration``.

    Args:
        iteration: the iteration about to run, 0-based.
        base_lr: the rate reached after warm-up.
        total_iterations: the length of the whole run; the rate reaches zero there.
        warmup_iterations: linear warm-up length, at the start of each phase (clipped to the phase).
        freeze_iterations: length of the first (frozen-encoder) phase; 0 for a single phase.
        exponent: the poly exponent.
    """
    if total_iterations <= 0:
        raise ValueError(f"total_iterations must be positive, got {total_iterations}")
    if iteration < freeze_iterations:
        return base_lr * min(1.0, (iteration + 1) / max(1, min(warmup_iterations, freeze_iterations)))
    step = iteration - freeze_iterations
    phase_length = total_iterations - freeze_iterations
    warmup = min(warmup_iterations, phase_length)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    decay_length = max(1, phase_length - warmup)
    return base_lr * max(0.0, 1.0 - (step - warmup) / decay_length) ** exponent


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    """Set every parameter group's rate; groups may carry a ``lr_scale`` (e.g. a slower encoder)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * group.get("lr_scale", 1.0)
