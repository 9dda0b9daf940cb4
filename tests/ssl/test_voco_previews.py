"""VoCo previews: the layout and overlap pictures, and the trainer step that writes them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data.utils import list_data_collate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shared.encoders.resenc import ResidualEncoder
from shared.ssl.voco import VolumeContrast
from shared.ssl.voco_crops import VoCoCropsd
from shared.ssl.voco_previews import (
    GRID_COLOUR,
    LAYOUT_TAG,
    OVERLAP_TAG,
    TARGET_COLOURS,
    VoCoPreviews,
    crop_layout_image,
    overlap_matrix_image,
)


def test_layout_stitches_the_region_and_outlines_grid_and_targets():
    # 2 × 2 × 1 base crops of 4³, each filled with its index; one target sticks out by 2 voxels at the top
    base_positions = torch.tensor([[0, 0, 0], [0, 4, 0], [4, 0, 0], [4, 4, 0]])
    base_crops = torch.arange(4.0)[:, None, None, None, None].expand(4, 1, 4, 4, 4)
    target_positions = torch.tensor([[-2, 1, 0], [3, 3, 0]])
    picture = crop_layout_image(base_crops, base_positions, target_positions)
    assert picture.shape == (3, 10, 8) and picture.dtype == np.float32  # X from -2 to 8, Y from 0 to 8
    np.testing.assert_allclose(picture[:, 2 + 2, 2], 0.0)  # inside crop 0 (value 0 → black), no outline
    np.testing.assert_allclose(picture[:, 2 + 5, 5], 1.0)  # inside crop 3 (the window's top → white)
    np.testing.assert_allclose(picture[:, 2 + 5, 2], 2 / 3)  # inside crop 2
    np.testing.assert_allclose(picture[:, 2 + 7, 0], GRID_COLOUR)  # a base crop's border
    np.testing.assert_allclose(picture[:, 0, 2], TARGET_COLOURS[0])  # the first target's top edge, outside
    np.testing.assert_allclose(picture[:, 1, 7], 0.0)  # outside the region and every outline
    np.testing.assert_allclose(picture[:, 2 + 6, 4], TARGET_COLOURS[1])  # the second target's bottom edge


def test_overlap_matrix_puts_labels_beside_predictions():
    overlaps = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0]])
    similarity = torch.tensor([[0.5, 0.1, 1.2], [0.0, 0.6, 0.3]])
    picture = overlap_matrix_image(overlaps, similarity, cell=2)
    assert picture.shape == (1, 4, 14) and picture.dtype == np.float32
    np.testing.assert_allclose(picture[0, ::2, ::2], [[1.0, 0.0, 0.0, 0.5, 0.5, 0.1, 1.0],
                                                      [0.25, 0.75, 0.0, 0.5, 0.0, 0.6, 0.3]], rtol=1e-6)
    np.testing.assert_array_equal(picture[0, 2:4, 2:4], 0.75)
    with pytest.raises(ValueError, match="differ"):
        overlap_matrix_image(overlaps, similarity[:, :2])


def test_step_returns_scalar_losses_and_logs_both_pictures_on_schedule(tmp_path):
    torch.manual_seed(0)
    encoder = ResidualEncoder(1, features=(2, 4), strides=(1, 2), blocks_per_stage=1)
    model = VolumeContrast(1, encoder_spec=encoder, hidden_channels=8, out_channels=8)
    transform = VoCoCropsd("image", base_counts=(2, 2, 1), crop_size=4, num_targets=3, target_margin=(1, 1, 0))
    transform.set_random_state(0)
    batch = list_data_collate([transform({"image": torch.randn(1, 10, 10, 4)}) for _ in range(2)])
    previews = VoCoPreviews(tmp_path, every=2)
    for iteration in (1, 2, 3):
        previews(SimpleNamespace(state=SimpleNamespace(iteration=iteration)))
        losses = previews.forward(model, batch, torch.device("cpu"))
        assert set(losses) == {"loss", "positive_loss", "negative_loss", "regularization_loss"}
        assert losses["loss"].requires_grad
    previews.writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload()
    assert [event.step for event in events.Images(LAYOUT_TAG)] == [1, 2]
    assert [event.step for event in events.Images(OVERLAP_TAG)] == [1, 2]
    overlap = events.Images(OVERLAP_TAG)[0]
    assert (overlap.width, overlap.height) == ((2 * 4 + 1) * 8, 3 * 8)


def test_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="every"):
        VoCoPreviews(tmp_path, every=0)
