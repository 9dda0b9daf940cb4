"""The freeze phase of fine-tuning: the encoder waits while the decoder and heads train, then all train.

The paper (appendix C.3) and its code (nnDetection's ``*_warmupdecoder_heads`` modules) train only the
neck and the heads first: the whole encoder is frozen, a randomly initialised stem included. That is
``frozen="encoder"``, the default. ``frozen="transferred"`` freezes only the transferred tensors, so a
random stem trains from the first step.

Freezing is ``requires_grad = False`` plus dropping any stale gradient: a parameter whose ``grad`` is
``None`` is skipped entirely by torch's optimizers, so neither weight decay nor momentum (SGD's
buffer, Adam's moments) can move it while frozen — it stays bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

#: what the freeze phase holds still: the whole encoder (the paper's) or only the transferred tensors
FROZEN_PARTS = ("encoder", "transferred")


def frozen_parameter_names(network: nn.Module, transferred_keys: Iterable[str] | Any, frozen: str = "encoder"
                           ) -> list[str]:
    """Names of the parameters the freeze phase holds still.

    Args:
        network: the network being fine-tuned; ``"encoder"`` needs its ``encoder_prefix`` (``"encoder."``).
        transferred_keys: parameter names from ``TransferReport.transferred_keys``, or the report.
        frozen: ``"encoder"`` (every encoder parameter, transferred or not) or ``"transferred"``.
    """
    if frozen not in FROZEN_PARTS:
        raise ValueError(f"frozen: expected one of {FROZEN_PARTS}, got {frozen!r}")
    names = [name for name, _ in network.named_parameters()]
    if frozen == "transferred":
        keys = _key_set(transferred_keys)
        return [name for name in names if name in keys]
    prefix = getattr(network, "encoder_prefix", None)
    if not prefix:
        raise ValueError(f"frozen='encoder' needs a network with an encoder_prefix; {type(network).__name__} has none")
    return [name for name in names if name.startswith(prefix)]


def set_trainable(network: nn.Module, names: Iterable[str], trainable: bool) -> int:
    """Freezes or unfreezes the parameters named in ``names`` (buffers are ignored).

    Args:
        network: the network whose ``named_parameters()`` the names use.
        names: parameter names.
        trainable: False freezes (and clears their gradients), True unfreezes.

    Returns:
        How many parameters were changed.
    """
    keys = set(names)
    count = 0
    for name, parameter in network.named_parameters():
        if name in keys:
            parameter.requires_grad_(trainable)
            if not trainable:
                parameter.grad = None
            count += 1
    return count


class FreezePhase:
    """Keeps the named parameters frozen for the first ``freeze_iterations`` iterations.

    Call it with the 1-based number of the iteration about to run (or an ignite ``Engine``, whose
    ``state.iteration`` is that number at ``ITERATION_STARTED``); ``attach(engine)`` registers it.

    Args:
        network: the network being fine-tuned.
        names: the parameters to hold still (:func:`frozen_parameter_names`).
        freeze_iterations: iterations 1..N train only the other parameters; from N + 1 on, all.
    """

    def __init__(self, network: nn.Module, names: Iterable[str], freeze_iterations: int):
        if freeze_iterations < 0:
            raise ValueError(f"freeze_iterations: expected >= 0, got {freeze_iterations}")
        self.network = network
        self.names = set(names)
        self.freeze_iterations = int(freeze_iterations)
        self.frozen: bool | None = None

    def __call__(self, engine_or_iteration: Any) -> None:
        """Sets the state for the iteration about to run (only acts when the state changes)."""
        state = getattr(engine_or_iteration, "state", None)
        iteration = int(state.iteration if state is not None else engine_or_iteration)
        frozen = iteration <= self.freeze_iterations
        if frozen != self.frozen:
            set_trainable(self.network, self.names, not frozen)
            self.frozen = frozen

    def attach(self, engine: Any) -> None:
        """Registers the handler on an ignite engine's ``ITERATION_STARTED`` event."""
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_STARTED, self)


def _key_set(transferred_keys: Iterable[str] | Any) -> set[str]:
    return set(getattr(transferred_keys, "transferred_keys", transferred_keys))
