import pytest
import torch

from shared.engines.schedule import learning_rate_at


def test_single_phase_warms_up_linearly_then_decays_to_zero():
    rates = [learning_rate_at(i, base_lr=1.0, total_iterations=100, lr_warmup_iterations=10) for i in range(100)]
    assert rates[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert rates[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[55] == pytest.approx((1 - 45 / 90) ** 0.9)
    assert learning_rate_at(100, base_lr=1.0, total_iterations=100, lr_warmup_iterations=10) == 0.0


def test_freeze_phase_ramps_over_its_whole_length_then_the_full_schedule_restarts():
    # nnDetection's phase 1 ramps linearly over all its iterations (7,500 of 7,500), whatever the LR warm-up
    kwargs = dict(base_lr=0.01, total_iterations=200, lr_warmup_iterations=5, freeze_iterations=10)
    assert learning_rate_at(0, **kwargs) == pytest.approx(0.001)
    assert learning_rate_at(4, **kwargs) == pytest.approx(0.005)
    assert learning_rate_at(9, **kwargs) == pytest.approx(0.01)
    kwargs["lr_warmup_iterations"] = 20
    assert learning_rate_at(10, **kwargs) == pytest.approx(0.01 / 20), "warm-up restarts after the freeze"
    assert learning_rate_at(29, **kwargs) == pytest.approx(0.01)
    assert learning_rate_at(0, **kwargs) == pytest.approx(0.001)
    assert learning_rate_at(199, **kwargs) < 1e-4


def test_rejects_an_empty_run():
    with pytest.raises(ValueError, match="total_iterations"):
        learning_rate_at(0, base_lr=1.0, total_iterations=0)


def test_the_handler_logs_the_rate_each_iteration_ran_with_to_tensorboard(tmp_path):
    from ignite.engine import Engine
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from shared.engines.schedule import PolyLearningRate

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=123.0)
    used = []
    engine = Engine(lambda engine, batch: used.append(optimizer.param_groups[0]["lr"]))
    engine.optimizer = optimizer
    handler = PolyLearningRate(0.1, 12, lr_warmup_iterations=4, log_dir=tmp_path / "logs", log_every=3)
    handler.attach(engine)
    engine.run([0] * 6, max_epochs=2)

    events = EventAccumulator(str(tmp_path / "logs"))
    events.Reload()
    logged = events.Scalars("train/learning_rate")
    assert [event.step for event in logged] == [3, 6, 9, 12]
    assert [event.value for event in logged] == pytest.approx([used[step - 1] for step in (3, 6, 9, 12)])
    assert logged[0].value == pytest.approx(learning_rate_at(2, base_lr=0.1, total_iterations=12,
                                                             lr_warmup_iterations=4))
    assert handler.writer is None, "the event file is closed when the run completes"


def test_the_handler_without_a_log_dir_writes_nothing(tmp_path):
    from ignite.engine import Engine

    from shared.engines.schedule import PolyLearningRate

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    engine = Engine(lambda engine, batch: None)
    engine.optimizer = optimizer
    PolyLearningRate(0.1, 4).attach(engine)
    engine.run([0] * 4, max_epochs=1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(learning_rate_at(3, base_lr=0.1, total_iterations=4))
    assert not any(tmp_path.iterdir())
