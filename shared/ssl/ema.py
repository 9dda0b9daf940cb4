"""A momentum (EMA) teacher: a frozen copy of a student that trails it by an exponential moving average.

After every optimizer step, ``teacher ← momentum · teacher + (1 − momentum) · student`` for every weight
(and floating-point buffer; other buffers are copied). The teacher gives slowly moving targets, which
is what lets VoCo's loss fall (nnssl issue #22: without one it does not).

The teacher's weights are registered as *buffers*, not parameters: ``model.parameters()`` (what every
optimizer and gradient clip is built from) never sees them, they never require a gradient, and they
are still part of ``state_dict()``, so a checkpoint resumes the teacher exactly.

The update must run after the optimizer step: :class:`MomentumUpdate` is an ignite handler for
``Events.ITERATION_COMPLETED``, which ignite and ``monai.engines`` fire after the step.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters are buffers (no gradient, in no optimizer).

    Args:
        module: the module to copy; it is not changed.

    Returns:
        The copy; its ``state_dict()`` keys equal the original's.
    """
    duplicate = copy.deepcopy(module)
    for submodule in duplicate.modules():
        for name, parameter in list(submodule.named_parameters(recurse=False)):
            delattr(submodule, name)
            submodule.register_buffer(name, parameter.detach().clone())
    return duplicate


class MomentumTeacher(nn.Module):
    """Holds an EMA copy of ``student``; :meth:`update` moves it towards the student.

    The student is referenced, not registered: its weights are saved once, by their owner, while the
    teacher's copy is saved under this module's ``module.`` prefix.

    Args:
        student: the module to trail (e.g. an ``nn.ModuleDict`` of an encoder and a projector that
            the caller registers elsewhere); the copy starts equal to it.
        momentum: the weight of the teacher's old value in each update, in [0, 1]; 0 makes the
            teacher a copy of the student after each step, 1 freezes it. VoCo uses 0.9; BYOL-style
            methods 0.99–0.999 (a horizon of about 1 / (1 − momentum) steps).

    Shape:
        ``forward`` passes its arguments to the copy under ``torch.no_grad()``.
    """

    def __init__(self, student: nn.Module, *, momentum: float = 0.9):
        super().__init__()
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.module = frozen_copy(student)
        self._student = (student,)  # a tuple: nn.Module does not register what it holds

    @property
    def student(self) -> nn.Module:
        """The module the teacher trails."""
        return self._student[0]

    @torch.no_grad()
    def update(self) -> None:
        """``teacher ← momentum · teacher + (1 − momentum) · student``; non-float buffers are copied."""
        sources = dict(self.student.named_parameters())
        sources.update(self.student.named_buffers())
        for name, tensor in self.module.named_buffers():
            source = sources[name].detach().to(tensor.device)
            if tensor.is_floating_point():
                tensor.mul_(self.momentum).add_(source, alpha=1.0 - self.momentum)
            else:
                tensor.copy_(source)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.module(*args, **kwargs)


class MomentumUpdate:
    """Ignite handler that updates a :class:`MomentumTeacher` after every optimizer step.

    ``attach`` registers it for ``Events.ITERATION_COMPLETED`` (after the step in ignite's and
    ``monai.engines``' trainers), so it can be listed among a bundle's ``train#handlers``.

    Args:
        teacher: the teacher to update; ``None`` (a run without a teacher) makes the handler a no-op,
            so a configuration can keep it when the teacher is switched off.
    """

    def __init__(self, teacher: MomentumTeacher | None):
        self.teacher = teacher

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Any = None) -> None:
        if self.teacher is not None:
            self.teacher.update()
