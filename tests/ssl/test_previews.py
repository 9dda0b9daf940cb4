"""Reconstruction previews: the picture, and the trainer step that writes it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from shared.ssl.mae import MaskedAutoencoder
from shared.ssl.previews import TAG, ReconstructionPreviews, preview_image


def test_preview_shows_three_panels_in_the_inputs_window():
    image = torch.arange(4 * 3 * 5, dtype=torch.float32).reshape(4, 3, 5)
    mask = torch.zeros(4, 3, 5, dtype=torch.bool)
    mask[0] = True
    picture = preview_image(image, mask, image * 10)
    assert picture.shape == (1, 4, 9) and picture.dtype == np.float32
    middle = image[..., 2]
    expected = (middle - middle.min()) / (middle.max() - middle.min())
    np.testing.assert_allclose(picture[0, :, :3], expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(picture[0, 0, 3:6], 0.0)  # masked row shows 0, below the window
    np.testing.assert_allclose(picture[0, 1:, 3:6], expected[1:].numpy(), rtol=1e-6)
    assert picture[0, :, 6:].max() == 1.0  # the reconstruction is clipped to the window


def test_step_returns_only_the_loss_and_logs_on_schedule(tmp_path):
    model = MaskedAutoencoder(nn.Conv3d(1, 1, 3, padding=1), block_size=4, mask_ratio=0.5, seed=0)
    previews = ReconstructionPreviews(tmp_path, every=3)
    batch = {"image": torch.randn(2, 1, 8, 8, 8)}
    for iteration in (1, 2, 3):
        previews(SimpleNamespace(state=SimpleNamespace(iteration=iteration)))
        losses = previews.forward(model, batch, torch.device("cpu"))
        assert set(losses) == {"loss"} and losses["loss"].requires_grad
    previews.writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload()
    steps = [event.step for event in events.Images(TAG)]
    assert steps == [1, 3]
    assert (events.Images(TAG)[0].width, events.Images(TAG)[0].height) == (24, 8)


def test_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="every"):
        ReconstructionPreviews(tmp_path, every=0)
