"""Warm-up phase of fine-tuning: train only what was not transferred, then everything (paper, appendix C.3).

Freezing is ``requires_grad = False`` plus dropping any stale gradient: a parameter whose ``grad`` is
``None`` is skipped entirely by torch's optimizers, so neither weight decay nor momentum (SGD's
buffer, Adam's moments) can move it while frozen — it stays bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn


def _key_set(transferred_keys: Iterable[str] | Any) -> set[str]:
    keys = getattr(transferred_keys, "transferred_keys", transferred_keys)
    return set(keys)


def set_transferred_trainable(network: nn.Module, transferred_keys: Iterable[str], trainable: bool) -> int:
    """Freezes or unfreezes the parameters named in ``transferred_keys``.

    Args:
        network: the network whose ``named_parameters()`` names the keys use.
        transferred_keys: parameter names (buffers are ignored), or a ``TransferReport``.
        trainable: False freezes (and clears their gradients), True unfreezes.

    Returns:
        How many parameters were changed.
    """
    keys = _key_set(transferred_keys)
    count = 0
    for name, parameter in network.named_parameters():
        if name in keys:
            parameter.requires_grad_(trainable)
            if not trainable:
                parameter.grad = None
            count += 1
    return count


class WarmupFreeze:
    """Keeps the transferred parameters frozen for the first ``warmup_iterations`` iterations.

    Call it with the 1-based number of the iteration about to run (or an ignite ``Engine``, whose
    ``state.iteration`` is that number at ``ITERATION_STARTED``); ``attach(engine)`` registers it.

    Args:
        network: the network being fine-tuned.
        transferred_keys: parameter names from ``TransferReport.transferred_keys`` (or the report).
        warmup_iterations: iterations 1..N train only the new parameters; from N + 1 on, all.
    """

    def __init__(self, network: nn.Module, transferred_keys: Iterable[str], warmup_iterations: int):
        if warmup_iterations < 0:
            raise ValueError(f"warmup_iterations: expected >= 0, got {warmup_iterations}")
        self.network = network
        self.transferred_keys = _key_set(transferred_keys)
        self.warmup_iterations = int(warmup_iterations)
        self.frozen: bool | None = None

    def __call__(self, engine_or_iteration: Any) -> None:
        """Sets the state for the iteration about to run (only acts when the state changes)."""
        state = getattr(engine_or_iteration, "state", None)
        iteration = int(state.iteration if state is not None else engine_or_iteration)
        frozen = iteration <= self.warmup_iterations
        if frozen != self.frozen:
            set_transferred_trainable(self.network, self.transferred_keys, not frozen)
            self.frozen = frozen

    def attach(self, engine: Any) -> None:
        """Registers the handler on an ignite engine's ``ITERATION_STARTED`` event."""
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_STARTED, self)
