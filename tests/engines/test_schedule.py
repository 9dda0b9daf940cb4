import pytest

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
