import pytest
import torch
from torch import nn

from shared.ssl.mae import MaskedAutoencoder, masked_mse_loss
from shared.ssl.masking import block_mask


class TinyUNet(nn.Module):
    """Stand-in reconstruction network (C -> C) with an ``encoder`` and a ``decoder`` submodule."""

    def __init__(self, channels: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv3d(channels, 4, 3, padding=1), nn.LeakyReLU())
        self.decoder = nn.Conv3d(4, channels, 1)
        self.seen = None

    def forward(self, images):
        self.seen = images.detach().clone()
        return self.decoder(self.encoder(images))


class FixedOutput(nn.Module):
    """Returns a preset reconstruction, so the test controls exactly what the loss sees."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, images):
        return self.output


def test_loss_ignores_unmasked_voxels():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 2, 8, 8, 8, generator=generator, dtype=torch.float64)
    mask = block_mask(2, (8, 8, 8), block_size=4, mask_ratio=0.5, generator=generator)
    output = torch.randn(images.shape, generator=generator, dtype=torch.float64)
    model = MaskedAutoencoder(FixedOutput(output), block_size=4, mask_ratio=0.5)
    reference = model(images, mask)["loss"]

    changed_visible = output.clone()
    changed_visible[mask.expand_as(output) == 0] = 1e6
    model.network.output = changed_visible
    assert model(images, mask)["loss"].item() == reference.item()

    changed_hidden = output.clone()
    changed_hidden[mask.expand_as(output)] += 0.5
    model.network.output = changed_hidden
    assert model(images, mask)["loss"].item() != pytest.approx(reference.item())


def test_loss_value_is_mean_over_masked_voxels_and_channels():
    target = torch.zeros(1, 3, 4, 4, 4, dtype=torch.float64)
    reconstruction = torch.zeros_like(target)
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., :2] = True  # 32 masked voxels × 3 channels
    reconstruction[:, 0, ..., 0] = 2.0  # 16 masked voxels of channel 0 off by 2
    reconstruction[:, 1, ..., 3] = 5.0  # visible voxels: ignored
    assert masked_mse_loss(reconstruction, target, mask).item() == pytest.approx(16 * 4.0 / 96)


def test_masked_voxels_are_zeroed_in_the_input_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    network = TinyUNet(2)
    model = MaskedAutoencoder(network, block_size=4, mask_ratio=0.75, seed=3)
    images = torch.randn(2, 2, 8, 8, 12) + 3.0
    result = model(images)
    mask = result["mask"]
    assert result["reconstruction"].shape == images.shape
    assert mask.shape == (2, 1, 8, 8, 12)
    assert mask.flatten(1).sum(1).tolist() == [round(0.75 * 12) * 64] * 2
    seen = network.seen
    assert torch.all(seen[mask.expand_as(seen)] == 0)
    assert torch.equal(seen[~mask.expand_as(seen)], images[~mask.expand_as(images)])
    result["loss"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert model.encoder is network.encoder


def test_seeded_masks_repeat():
    images = torch.randn(1, 1, 8, 8, 8)
    first = MaskedAutoencoder(TinyUNet(1), block_size=4, seed=5)(images)["mask"]
    second = MaskedAutoencoder(TinyUNet(1), block_size=4, seed=5)(images)["mask"]
    assert torch.equal(first, second)


def test_mask_generator_state_travels_with_the_state_dict():
    images = torch.randn(2, 1, 8, 8, 8)
    running = MaskedAutoencoder(TinyUNet(1), block_size=4, seed=5)
    running(images)  # the generator has moved on
    resumed = MaskedAutoencoder(TinyUNet(1), block_size=4, seed=5)
    resumed.load_state_dict(running.state_dict())
    assert torch.equal(resumed(images)["mask"], running(images)["mask"])
    unseeded = MaskedAutoencoder(TinyUNet(1), block_size=4)
    unseeded.load_state_dict(unseeded.state_dict())  # nothing to restore, and no error


def test_loss_falls_when_training():
    torch.manual_seed(0)
    model = MaskedAutoencoder(TinyUNet(1), block_size=4, mask_ratio=0.5, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-2)
    # a constant volume is learnable from zeros alone: the bias must move to the true value
    smooth = torch.full((2, 1, 8, 8, 8), 2.0)
    losses = []
    for _ in range(60):
        loss = model(smooth)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.2 * sum(losses[:5])


def test_wrong_rank_raises():
    with pytest.raises(ValueError, match="B, C, X, Y, Z"):
        MaskedAutoencoder(TinyUNet(1), block_size=4)(torch.zeros(1, 8, 8, 8))
