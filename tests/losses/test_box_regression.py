from __future__ import annotations

import torch

from shared.losses.box_regression import DeltaL1Loss, GIoULoss


def test_l1_is_summed_over_deltas_and_averaged_over_positives():
    predicted = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0, -2]])
    loss = DeltaL1Loss()(predicted, torch.zeros(2, 6))
    torch.testing.assert_close(loss, torch.tensor(1.5))
    smooth = DeltaL1Loss(beta=1.0)(predicted, torch.zeros(2, 6))
    torch.testing.assert_close(smooth, torch.tensor((0.5 + 1.5) / 2))


def test_giou_loss_golden_values():
    a = torch.tensor([[0.0, 0, 0, 1, 1, 1], [0.0, 0, 0, 2, 2, 2]])
    b = torch.tensor([[2.0, 0, 0, 3, 1, 1], [0.0, 0, 0, 2, 2, 2]])
    # first pair: IoU 0, union 2, enclosure 3 → GIoU -1/3 → loss 4/3; second: identical → 0
    torch.testing.assert_close(GIoULoss()(a[:1], b[:1]), torch.tensor(4.0 / 3.0))
    torch.testing.assert_close(GIoULoss()(a, b), torch.tensor(2.0 / 3.0))


def test_giou_loss_has_gradients_and_empty_is_zero():
    predicted = torch.tensor([[0.0, 0, 0, 1, 1, 1]], requires_grad=True)
    GIoULoss()(predicted, torch.tensor([[0.5, 0, 0, 1.5, 1, 1]])).backward()
    assert predicted.grad.abs().sum() > 0
    empty = torch.zeros(0, 6, requires_grad=True)
    for loss_fn in (GIoULoss(), DeltaL1Loss()):
        loss = loss_fn(empty, torch.zeros(0, 6))
        assert loss == 0 and loss.requires_grad
