"""The freeze phase of fine-tuning: the encoder waits while the decoder and heads train, then all train.

The paper (appendix C.3) and its code (nnDetection's ``*_warmupdecoder_heads`` modules) train only the
neck and the heads first: the whole encoder is frozen, a randomly initialised stem included. That is
``frozen="encoder"``, the default. ``frozen="transferred"`` freezes only the transferred tensors, so a
random stem trains from the first step.

Freezing drops the frozen parameters' gradients after the backward pass and before clipping and the
optimizer step (the trainer's ``BACKWARD_COMPLETED`` event). A parameter whose ``grad`` is ``None`` is
skipped entirely by torch's optimizers, so neither weight decay nor momentum (SGD's buffer, Adam's
moments) can move it while frozen: it stays bit-identical, and clipping sees only the trained ones.
``requires_grad`` is never flipped: ``DistributedDataParallel`` expects the same parameters to produce
gradients in every iteration and fails at the phase switch if they change ("Expected to have finished
reduction in the prior iteration"). The price is computing (and all-reducing) the encoder's gradients
during the freeze phase, which is short (a few % of the run).
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


class FreezePhase:
    """Holds the named parameters still for the first ``freeze_iterations`` iterations.

    Call it with the 1-based number of the iteration that just ran its backward pass (or an ignite
    ``Engine`` at that point); ``attach(engine)`` registers it on MONAI's ``BACKWARD_COMPLETED``, which
    :class:`shared.engines.trainer.LossDictTrainer` fires before clipping and the optimizer step.

    Args:
        network: the network being fine-tuned (its parameters are shared with a DDP wrapper around it).
        names: the parameters to hold still (:func:`frozen_parameter_names`).
        freeze_iterations: iterations 1..N train only the other parameters; from N + 1 on, all.
    """

    def __init__(self, network: nn.Module, names: Iterable[str], freeze_iterations: int):
        if freeze_iterations < 0:
            raise ValueError(f"freeze_iterations: expected >= 0, got {freeze_iterations}")
        self.names = set(names)
        unknown = self.names - {name for name, _ in network.named_parameters()}
        if unknown:
            raise ValueError(f"names: {len(unknown)} are not parameters of the network, e.g. {sorted(unknown)[0]!r}")
        self.parameters = [parameter for name, parameter in network.named_parameters() if name in self.names]
        self.freeze_iterations = int(freeze_iterations)

    def frozen_at(self, iteration: int) -> bool:
        """Whether the 1-based ``iteration`` is in the freeze phase."""
        return iteration <= self.freeze_iterations

    def __call__(self, engine_or_iteration: Any) -> int:
        """Drops the frozen parameters' gradients if the iteration is in the freeze phase.

        Returns:
            How many gradients were dropped.
        """
        state = getattr(engine_or_iteration, "state", None)
        iteration = int(state.iteration if state is not None else engine_or_iteration)
        if not self.frozen_at(iteration):
            return 0
        for parameter in self.parameters:
            parameter.grad = None
        return len(self.parameters)

    def attach(self, engine: Any) -> None:
        """Registers the handler on the trainer's ``BACKWARD_COMPLETED`` event."""
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)


def _key_set(transferred_keys: Iterable[str] | Any) -> set[str]:
    return set(getattr(transferred_keys, "transferred_keys", transferred_keys))
