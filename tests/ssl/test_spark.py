"""SparK: masked-only loss, gradients to the tokens and every weight, the dense encoder exported like MAE's."""

from __future__ import annotations

import json

import pytest
import torch

from shared.checkpoints.loading import load_pretrained
from shared.data.pretraining import PretrainingData
from shared.engines.finetune import load_pretrained_encoder
from shared.networks.resenc_unet import ResEncUNet
from shared.networks.retina_unet import RetinaUNetNetwork
from shared.ssl.export import export_pretrained_encoder
from shared.ssl.mae import MaskedAutoencoder
from shared.ssl.masking import block_mask
from shared.ssl.spark import SparKPretraining

TINY = {"name": "resenc", "preset": "tiny"}


def _model(block_size=8, seed=0, **encoder) -> SparKPretraining:
    torch.manual_seed(0)
    network = ResEncUNet(1, 1, encoder_spec={**TINY, **encoder})
    return SparKPretraining(network, block_size=block_size, mask_ratio=0.5, seed=seed)


def test_mask_tokens_only_where_the_grid_resolves_the_blocks():
    model = _model(block_size=4)  # tiny strides 1, 2, 4, 8: the stride-8 level is coarser than the blocks
    assert sorted(model.mask_tokens) == ["0", "1", "2"]
    for token in model.mask_tokens.values():
        assert token.abs().max() <= 0.04 and token.std() > 0
    assert isinstance(model.densify_convs[0], torch.nn.Identity)
    assert all(conv.kernel_size == (3, 3, 3) for conv in model.densify_convs[1:])


def test_gradients_reach_mask_tokens_and_every_parameter():
    model = _model(zero_init_residual=False)
    result = model(torch.randn(2, 1, 32, 32, 32))
    assert result["reconstruction"].shape == (2, 1, 32, 32, 32) and result["mask"].shape == (2, 1, 32, 32, 32)
    result["loss"].backward()
    # without deep supervision the decoder uses only its finest output layer (DNA keeps all of them)
    unused = {f"network.decoder.seg_layers.{index}.{kind}" for index in range(2) for kind in ("weight", "bias")}
    for name, parameter in model.named_parameters():
        if name not in unused:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_loss_is_the_mse_over_hidden_voxels_and_hidden_input_does_not_matter():
    model = _model().double()
    images = torch.randn(2, 1, 32, 32, 32, dtype=torch.float64)
    hidden = block_mask(2, (32, 32, 32), block_size=8, mask_ratio=0.5, generator=torch.Generator().manual_seed(3))
    result = model(images, hidden)
    expected = ((result["reconstruction"] - images) ** 2)[hidden.expand_as(images)].mean()
    assert result["loss"].item() == pytest.approx(expected.item(), rel=1e-12)
    # the reconstruction never depends on the hidden input: only the loss's target does
    perturbed = model(images + 50.0 * hidden, hidden)
    assert torch.equal(perturbed["reconstruction"], result["reconstruction"])


def test_seeded_masks_resume_with_the_state_dict():
    images = torch.randn(2, 1, 32, 32, 32)
    running = _model(seed=5)
    running(images)
    resumed = _model(seed=5)
    resumed.load_state_dict(running.state_dict())
    assert torch.equal(resumed(images)["mask"], running(images)["mask"])


def test_exported_encoder_has_mae_keys_and_loads_into_retina_unet(tmp_path):
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(1, 1, 32, 32, 32))["loss"].backward()
    optimizer.step()  # the encoder's weights differ from any fresh initialisation
    plan = {"target_spacing": [1.0, 1.0, 1.0], "datalist_sha256": "x", "channels": [{"modality": "CT"}]}
    data = PretrainingData(plan, ["a"], str(tmp_path / "datalist.json"), ["unlabelled"])
    manifest = export_pretrained_encoder(model.network, tmp_path / "out", data, architecture=TINY, method="spark",
                                         method_settings={"block_size": 8, "mask_ratio": 0.5})
    assert json.loads(manifest.read_text())["method"] == "spark"
    mae = MaskedAutoencoder(ResEncUNet(1, 1, encoder_spec=TINY))
    assert load_pretrained(tmp_path / "out").state_dict.keys() == mae.encoder.state_dict().keys()
    network = RetinaUNetNetwork(1, 2, encoder=TINY, decoder_channels=16, detection_strides=[4, 8])
    report = load_pretrained_encoder(network, str(manifest), stem="matching", expected_architecture=TINY)
    assert not report.missing_keys and not report.unexpected_keys and not report.shape_mismatches
    for key, value in network.encoder.state_dict().items():
        assert torch.equal(value, model.encoder.state_dict()[key]), key


def test_loss_falls_when_training():
    model = _model(seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    coordinates = torch.linspace(-1, 1, 32)
    smooth = coordinates[:, None, None] + coordinates[None, :, None] ** 2 + coordinates[None, None, :]
    smooth = smooth.expand(2, 1, 32, 32, 32)
    losses = []
    for _ in range(15):
        loss = model(smooth)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])
