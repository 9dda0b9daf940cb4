from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shared.losses.classification import (
    FocalClassificationLoss,
    HardNegativeBCELoss,
    one_hot_targets,
    sigmoid_focal_loss,
)

LN2 = math.log(2.0)


def test_sigmoid_focal_loss_golden_values():
    loss = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    # p_t = 0.5: CE ln 2, modulating (0.5)^2, alpha 0.25 for the positive and 0.75 for the negative
    torch.testing.assert_close(loss, torch.tensor([0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2]))
    logit = torch.tensor([2.0])
    p = torch.sigmoid(logit)
    expected = -0.25 * (1 - p) ** 2 * torch.log(p)
    torch.testing.assert_close(sigmoid_focal_loss(logit, torch.ones(1)), expected)


def test_focal_without_alpha_and_gamma_is_bce():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20, generator=generator)
    targets = (torch.rand(20, generator=generator) > 0.5).float()
    loss = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, targets, reduction="none"))


def test_one_hot_targets():
    targets = one_hot_targets(torch.tensor([[1, -1, 0, -2]]), 2, torch.float32)
    torch.testing.assert_close(targets, torch.tensor([[[0.0, 1.0], [0, 0], [1, 0], [0, 0]]]))


def test_focal_classification_is_normalised_by_positives_and_skips_ignored():
    logits = torch.zeros(1, 3, 1, requires_grad=True)
    loss = FocalClassificationLoss()(logits, torch.tensor([[0, -1, -2]]))
    torch.testing.assert_close(loss, torch.tensor(0.25 * 0.25 * LN2 + 0.75 * 0.25 * LN2))
    loss.backward()
    assert logits.grad[0, 2, 0] == 0  # the ignored anchor gets no gradient
    two_positives = FocalClassificationLoss()(torch.zeros(1, 3, 1), torch.tensor([[0, 0, -1]]))
    torch.testing.assert_close(two_positives, torch.tensor((2 * 0.25 + 0.75) * 0.25 * LN2 / 2))


def test_focal_classification_without_positives_is_finite():
    loss = FocalClassificationLoss()(torch.full((2, 5, 1), -4.6), torch.full((2, 5), -1))
    assert torch.isfinite(loss) and loss > 0


def test_hard_negative_bce_uses_positives_and_hardest_negatives():
    # one positive; the sampler keeps 3 negatives per positive (fraction 0.25), pool 1 = exactly the hardest
    logits = torch.tensor([[[0.5], [3.0], [2.0], [1.0], [-5.0], [-6.0], [0.0]]])
    classes = torch.tensor([[0, -1, -1, -1, -1, -1, -1]])
    loss = HardNegativeBCELoss(batch_size_per_image=4, positive_fraction=0.25, pool_size=1)(logits, classes)
    chosen_logits = torch.tensor([0.5, 3.0, 2.0, 1.0])
    chosen_targets = torch.tensor([1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(chosen_logits, chosen_targets))


def test_hard_negative_bce_on_an_empty_image_is_finite_and_differentiable():
    logits = torch.randn(1, 10, 2, requires_grad=True)
    loss = HardNegativeBCELoss()(logits, torch.full((1, 10), -1))
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0


def test_focal_classification_without_ignored_anchors_equals_the_masked_sum():
    # the loss skips the boolean mask when nothing is ignored; the value and gradient stay those of the mask
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 500, 2, generator=generator, requires_grad=True)
    classes = torch.randint(-1, 2, (2, 500), generator=generator)
    loss = FocalClassificationLoss()(logits, classes)
    valid = classes >= -1
    targets = one_hot_targets(classes, 2, logits.dtype)
    expected = sigmoid_focal_loss(logits[valid], targets[valid]).sum() / (classes >= 0).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    (grad,) = torch.autograd.grad(loss, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)
