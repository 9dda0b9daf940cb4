from __future__ import annotations

import math

import pytest
import torch

from shared.losses.segmentation import SegmentationLoss


def test_uniform_logits_golden_value():
    target = torch.zeros(2, 1, 2, 2, 1, dtype=torch.long)
    target[0, 0, 0] = 1  # 2 of 8 voxels foreground, all in the first image
    target[1, 0, 1] = 1  # 2 more in the second: 4 of 8 in the batch
    loss = SegmentationLoss()(torch.zeros(2, 2, 2, 2, 1), target)
    # CE = ln 2; batch Dice of foreground: 2·(0.5·4) / (0.5·8 + 4) = 0.5 → Dice loss 0.5
    torch.testing.assert_close(loss, torch.tensor(math.log(2) + 0.5), atol=1e-5, rtol=0)


def test_batch_dice_is_pooled_over_the_batch():
    # image 2 has no foreground: a per-image Dice would be degenerate there, the batch Dice is not
    target = torch.zeros(2, 1, 2, 2, 2, dtype=torch.long)
    target[0, 0, 0] = 1
    perfect = (torch.cat([1 - target, target], dim=1).float() - 0.5) * 40
    assert SegmentationLoss()(perfect, target) < 1e-3


def test_weights_and_gradient():
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (1, 1, 4, 4, 4))
    dice_only = SegmentationLoss(ce_weight=0.0)(logits, target)
    ce_only = SegmentationLoss(dice_weight=0.0)(logits, target)
    torch.testing.assert_close(SegmentationLoss()(logits, target), dice_only + ce_only)
    (dice_only + ce_only).backward()
    assert logits.grad.abs().sum() > 0


def test_two_channel_logits_are_foreground_background():
    # classes 1 and 2 (labels 2 and 3 in the map) are both foreground to a 2-channel head
    target = torch.tensor([0, 2, 3, 0, 1, 0, 0, 2]).reshape(1, 1, 2, 2, 2)
    logits = torch.randn(1, 2, 2, 2, 2)
    torch.testing.assert_close(SegmentationLoss()(logits, target), SegmentationLoss()(logits, (target > 0).long()))


def test_channels_that_fit_neither_layout_are_refused():
    target = torch.tensor([0, 3, 0, 0, 0, 0, 0, 1]).reshape(1, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="label 3.*3 channels"):
        SegmentationLoss()(torch.randn(1, 3, 2, 2, 2), target)
