"""The momentum teacher: the EMA formula, no gradient, outside the optimizer, saved, updated after the step."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from shared.ssl.ema import MomentumTeacher, MomentumUpdate, frozen_copy


class Pair(nn.Module):
    """A student with a parameterless layer, a layer without bias and integer buffers (batch norm)."""

    def __init__(self):
        super().__init__()
        self.student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2, bias=False))
        self.teacher = MomentumTeacher(self.student, momentum=0.75)


def test_frozen_copy_has_the_same_keys_and_outputs_and_no_parameters():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv3d(1, 2, 3), nn.InstanceNorm3d(2, affine=True), nn.Conv3d(2, 1, 1, bias=False))
    copy = frozen_copy(student)
    assert list(copy.parameters()) == []
    assert copy.state_dict().keys() == student.state_dict().keys()
    x = torch.randn(2, 1, 5, 5, 5)
    torch.testing.assert_close(copy(x), student(x), rtol=0, atol=0)
    assert all(not tensor.requires_grad for tensor in copy.state_dict().values())
    assert all(p.requires_grad for p in student.parameters())  # the original is untouched


def test_update_follows_the_ema_formula_and_copies_integer_buffers():
    torch.manual_seed(0)
    model = Pair().double()
    model.student(torch.randn(8, 3, dtype=torch.float64))  # moves batch-norm statistics and the counter
    with torch.no_grad():
        for parameter in model.student.parameters():
            parameter.add_(torch.randn_like(parameter))
    before = {name: tensor.clone() for name, tensor in model.teacher.module.state_dict().items()}
    model.teacher.update()
    after = model.teacher.module.state_dict()
    student = model.student.state_dict()
    for name, old in before.items():
        if old.is_floating_point():
            torch.testing.assert_close(after[name], 0.75 * old + 0.25 * student[name], rtol=1e-15, atol=1e-15)
            assert not torch.equal(after[name], old), name
        else:
            assert after[name].item() == student[name].item() == 1, name


def test_teacher_is_outside_the_optimizer_and_receives_no_gradient():
    torch.manual_seed(0)
    model = Pair()
    teacher_tensors = {id(t) for t in model.teacher.state_dict(keep_vars=True).values()}
    assert not teacher_tensors & {id(p) for p in model.parameters()}
    x = torch.randn(6, 3)
    loss = (model.student(x) * model.teacher(x)).sum() + model.teacher(x).sum()
    loss.backward()
    for name, tensor in model.teacher.state_dict(keep_vars=True).items():
        assert not tensor.requires_grad and tensor.grad is None, name
    for name, parameter in model.student.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_teacher_travels_with_the_state_dict_and_the_device_moves():
    torch.manual_seed(0)
    model = Pair()
    with torch.no_grad():
        model.student[0].weight.add_(1.0)
    model.teacher.update()
    state = model.state_dict()
    assert {"teacher.module.0.weight", "teacher.module.1.running_mean", "student.0.weight"} <= state.keys()
    assert not any(key.startswith("teacher.module.student") for key in state)  # the student is saved once
    fresh = Pair()
    fresh.load_state_dict(state)
    for name, tensor in model.teacher.state_dict().items():
        assert torch.equal(fresh.teacher.state_dict()[name], tensor), name
    fresh.double()  # the copy is moved with its owner and still trails the (converted) student
    fresh.teacher.update()
    assert fresh.teacher.module[0].weight.dtype == torch.float64


def test_handler_updates_after_the_optimizer_step():
    torch.manual_seed(0)
    model = Pair()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(6, 3)
    expected = {name: t.clone() for name, t in model.teacher.module.state_dict().items() if t.is_floating_point()}

    def step(engine, batch):
        optimizer.zero_grad()
        model.student(batch).pow(2).mean().backward()
        optimizer.step()

    engine = Engine(step)
    handler = MomentumUpdate(model.teacher)
    handler.attach(engine)

    @engine.on(Events.ITERATION_COMPLETED)
    def record(engine):  # runs after the handler (attached later): the reference EMA of the stepped student
        for name, tensor in model.student.state_dict().items():
            if name in expected:
                expected[name] = 0.75 * expected[name] + 0.25 * tensor

    engine.run([x] * 3, max_epochs=1)
    for name, tensor in expected.items():
        torch.testing.assert_close(model.teacher.module.state_dict()[name], tensor, rtol=1e-6, atol=1e-7)


def test_momentum_is_checked_and_a_missing_teacher_is_a_no_op():
    with pytest.raises(ValueError, match="momentum"):
        MomentumTeacher(nn.Linear(2, 2), momentum=1.5)
    MomentumUpdate(None)(None)
