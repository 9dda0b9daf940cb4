"""Models Genesis corruptions: what each changes and keeps, how often, reproducibly; the restoration loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from shared.data.cache_key import describe_transform
from shared.ssl import corruptions
from shared.ssl.models_genesis import (
    ModelsGenesis,
    RandBezierIntensityd,
    RandGenesisFlipd,
    RandInOutPaintd,
    RandLocalShuffled,
    genesis_corruptions,
)


def _volume(shape=(1, 20, 24, 16), seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _inside(boxes: np.ndarray, spatial_shape) -> torch.Tensor:
    inside = torch.zeros(spatial_shape, dtype=torch.bool)
    for x0, y0, z0, x1, y1, z1 in boxes.tolist():
        inside[x0:x1, y0:y1, z0:z1] = True
    return inside


def test_shuffle_keeps_the_values_of_each_window_and_leaves_the_rest():
    volume = torch.arange(2 * 20 * 20 * 20, dtype=torch.float32).view(2, 20, 20, 20)  # every value unique
    corners, sizes = corruptions.draw_shuffle_windows((20, 20, 20), 40, np.random.RandomState(1), max_fraction=0.25)
    shuffled = corruptions.shuffle_windows(volume, corners, sizes, torch.Generator().manual_seed(0))
    windows = [_inside(np.concatenate([c, c + s])[None], (20, 20, 20)) for c, s in zip(corners, sizes)]
    covered = torch.stack(windows).any(0)
    assert torch.equal(shuffled[:, ~covered], volume[:, ~covered])
    moved = 0
    for index, window in enumerate(windows):
        later = torch.stack(windows[index + 1:]).any(0) if index + 1 < len(windows) else torch.zeros_like(window)
        if (window & later).any():
            continue  # partly overwritten by a later window
        for channel in range(2):
            assert torch.equal(torch.sort(shuffled[channel][window]).values, torch.sort(volume[channel][window]).values)
        # one permutation for all channels: channel 1 stays channel 0 plus the channel offset
        assert torch.equal(shuffled[1][window] - shuffled[0][window], torch.full_like(shuffled[0][window], 8000.0))
        moved += int((shuffled[0][window] != volume[0][window]).any())
    assert moved >= 5  # windows of more than one voxel really are permuted


def test_shuffle_windows_follow_the_size_limits():
    corners, sizes = corruptions.draw_shuffle_windows((160, 40, 10), 10000, np.random.RandomState(0))
    assert sizes.min(0).tolist() == [1, 1, 1] and sizes.max(0).tolist() == [16, 4, 1]
    assert (corners >= 0).all() and (corners + sizes <= np.array([160, 40, 10])).all()


def test_bezier_keeps_the_range_of_z_scored_input_and_is_the_identity_for_a_straight_curve():
    volume = _volume((2, 16, 16, 16)) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    for seed in range(4):
        for invert in (False, True):
            controls = corruptions.draw_bezier_controls(np.random.RandomState(seed))
            mapped = corruptions.bezier_intensity(volume, controls, invert=invert)
            assert torch.allclose(mapped.amin(dim=(1, 2, 3)), volume.amin(dim=(1, 2, 3)), atol=1e-5)
            assert torch.allclose(mapped.amax(dim=(1, 2, 3)), volume.amax(dim=(1, 2, 3)), atol=1e-5)
            # no clamping: negative z-scores keep distinct, negative values
            assert (mapped < -0.5).sum() > 100 and mapped[mapped < 0].unique().numel() > 100
            order = torch.argsort(volume[0].flatten())
            steps = mapped[0].flatten()[order].diff()
            assert (steps <= 1e-5).all() if invert else (steps >= -1e-5).all()  # monotone curve
    straight = np.array([[0.0, 0.0], [1 / 3, 1 / 3], [2 / 3, 2 / 3], [1.0, 1.0]])
    assert torch.allclose(corruptions.bezier_intensity(volume, straight), volume, atol=1e-5)
    assert torch.allclose(corruptions.bezier_intensity(volume, straight, invert=True),
                          volume.amax(dim=(1, 2, 3), keepdim=True) + volume.amin(dim=(1, 2, 3), keepdim=True) - volume,
                          atol=1e-5)
    constant = torch.full((1, 4, 4, 4), 2.5)
    assert torch.equal(corruptions.bezier_intensity(constant, straight), constant)


def test_inpainting_changes_only_inside_the_boxes():
    volume = _volume((1, 36, 36, 36))
    for seed in range(5):
        boxes = corruptions.draw_inpainting_boxes((36, 36, 36), np.random.RandomState(seed))
        painted = corruptions.inpaint(volume, boxes, torch.Generator().manual_seed(seed))
        inside = _inside(boxes, (36, 36, 36))
        assert torch.equal(painted[:, ~inside], volume[:, ~inside])
        assert (painted[:, inside] != volume[:, inside]).all()
        assert painted.min() >= volume.min() and painted.max() <= volume.max()
        sizes = boxes[:, 3:] - boxes[:, :3]
        assert len(boxes) <= 5 and (sizes >= 6).all() and (sizes <= 12).all()


def test_outpainting_changes_only_outside_the_boxes():
    volume = _volume((1, 28, 28, 28))
    for seed in range(5):
        boxes = corruptions.draw_outpainting_boxes((28, 28, 28), np.random.RandomState(seed))
        painted = corruptions.outpaint(volume, boxes, torch.Generator().manual_seed(seed))
        inside = _inside(boxes, (28, 28, 28))
        assert 1 <= len(boxes) <= 5 and inside.any() and (~inside).any()
        assert torch.equal(painted[:, inside], volume[:, inside])
        assert (painted[:, ~inside] != volume[:, ~inside]).all()


@pytest.mark.parametrize(
    "transform, expected",
    [(RandGenesisFlipd("image", prob=0.4), 0.4), (RandLocalShuffled("image", prob=0.5, num_windows=20), 0.5),
     (RandBezierIntensityd("image", prob=0.9), 0.9), (RandInOutPaintd("image", prob=0.9), 0.9)],
)
def test_probabilities_are_respected(transform, expected):
    transform.set_random_state(0)
    volume = _volume((1, 24, 24, 24))  # windows of up to 2 voxels per axis
    changed = sum(not torch.equal(transform({"image": volume})["image"], volume) for _ in range(400))
    if isinstance(transform, RandGenesisFlipd):  # flipping one axis twice is no change: count the draws
        changed = 0
        for _ in range(400):
            transform({"image": volume})
            changed += bool(transform.axes)
    assert abs(changed / 400 - expected) < 0.075


def test_inpainting_share_and_inversion_share():
    painting = RandInOutPaintd("image", prob=1.0)
    painting.set_random_state(1)
    bezier = RandBezierIntensityd("image", prob=1.0)
    bezier.set_random_state(1)
    volume = _volume((1, 12, 12, 12))
    inpainted = inverted = 0
    for _ in range(400):
        painting({"image": volume})
        inpainted += painting.inpainting
        bezier({"image": volume})
        inverted += bezier.invert
    assert abs(inpainted / 400 - 0.2) < 0.06 and abs(inverted / 400 - 0.5) < 0.08


def test_set_random_state_reproduces_the_pipeline_and_keys_share_the_corruption():
    volume = MetaTensor(_volume((1, 20, 20, 20)), affine=torch.eye(4))
    outputs = []
    for _ in range(2):
        pipeline = Compose(genesis_corruptions()).set_random_state(seed=7)
        outputs.append([pipeline({"image": volume.clone()}) for _ in range(4)])
    for first, second in zip(*outputs):
        assert torch.equal(first["image"], second["image"]) and torch.equal(first["target"], second["target"])
        assert isinstance(first["image"], MetaTensor)
    assert any(not torch.equal(result["image"], result["target"]) for result in outputs[0])
    shuffle = RandLocalShuffled(["image", "label"], prob=1.0, num_windows=50)
    shuffle.set_random_state(3)
    pair = shuffle({"image": volume.clone(), "label": volume.clone()})
    assert torch.equal(pair["image"], pair["label"]) and not torch.equal(pair["image"], volume)


def test_the_description_holds_the_settings_not_what_the_last_call_drew():
    """The exported encoder.json records the augmentation: after training it must not carry the last
    draws (10,000 shuffle windows once made a 1.8 MB manifest)."""
    pipeline = Compose(genesis_corruptions())
    pipeline.set_random_state(seed=0)
    before = describe_transform(pipeline)
    for _ in range(3):
        pipeline({"image": _volume((1, 20, 20, 20))})
    assert describe_transform(pipeline) == before
    assert len(json.dumps(before)) < 2000


def test_flip_keeps_target_and_image_aligned():
    volume = _volume((1, 8, 10, 12))
    flip = RandGenesisFlipd(["image", "target"], prob=1.0)
    flip.set_random_state(2)
    flipped = flip({"image": volume, "target": volume.clone()})
    odd = [axis + 1 for axis in range(3) if flip.axes.count(axis) % 2]
    assert torch.equal(flipped["image"], torch.flip(volume, odd)) and torch.equal(flipped["image"], flipped["target"])


def test_models_genesis_loss_is_the_mse_over_all_voxels():
    network = torch.nn.Conv3d(1, 1, 1)
    model = ModelsGenesis(torch.nn.Module())
    model.network = network
    images, target = _volume((2, 1, 4, 4, 4)), _volume((2, 1, 4, 4, 4), seed=1)
    result = model(images, target)
    assert result["loss"].item() == pytest.approx(((network(images) - target) ** 2).mean().item())
    result["loss"].backward()
    assert all(parameter.grad.abs().sum() > 0 for parameter in network.parameters())
    with pytest.raises(ValueError, match="one shape"):
        model(images, target[:, :, :2])
