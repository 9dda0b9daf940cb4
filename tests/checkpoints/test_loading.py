"""Every checkpoint the project writes loads for transfer, in ``encoder`` and ``all`` modes."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shared.checkpoints.loading import load_pretrained
from shared.checkpoints.manifest import export_encoder
from shared.checkpoints.transfer import transfer_encoder
from shared.encoders.presets import build_encoder
from shared.engines.sampler import ResumableBatchSampler
from shared.engines.handlers_checkpoint import ResumableCheckpoint
from shared.engines.handlers_model import ModelSaver
from shared.engines.trainer import LossDictTrainer, prepare_image_batch
from shared.io.errors import InputError

SPEC = {"name": "resenc", "preset": "tiny"}


class TinyNetwork(nn.Module):
    """A network with the contract's ``encoder`` / ``encoder_prefix`` and a head outside the encoder."""

    encoder_prefix = "encoder."

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = build_encoder(SPEC, 1)
        self.head = nn.Conv3d(32, 2, 1)

    def forward(self, images):
        loss = self.head(self.encoder(images)[-1]).square().mean()
        return {"loss": loss}


class Noise(Dataset):
    def __getitem__(self, index):
        return {"image": torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(index))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A network trained 2 iterations by our Trainer, its files, and its encoder exported."""
    folder = tmp_path_factory.mktemp("run")
    network = TinyNetwork(seed=0)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(Noise(), batch_sampler=ResumableBatchSampler(1))
    LossDictTrainer("cpu", 1, loader, network, optimizer, epoch_length=2, prepare_batch=prepare_image_batch,
                     train_handlers=[ModelSaver(folder, network), ResumableCheckpoint(folder, every=1)]).run()
    export_encoder(network, folder / "exported", architecture=SPEC, in_channels=1, modality="CT",
                   spacing=[1, 1, 1], normalization="ct", method="mae")
    return folder, network


FILES = ["model.pt", "model_final.pt", "checkpoints/last_checkpoint_2.pt", "exported/encoder.json",
         "exported/encoder.pt", "exported"]


@pytest.mark.parametrize("name", FILES)
def test_every_file_the_project_writes_transfers_in_encoder_mode(trained, name):
    folder, network = trained
    fresh = TinyNetwork(seed=1)
    head = {key: value.clone() for key, value in fresh.head.state_dict().items()}
    report = transfer_encoder(fresh, load_pretrained(folder / name), mode="encoder", expected_architecture=SPEC)
    for key, value in network.encoder.state_dict().items():
        assert torch.equal(fresh.encoder.state_dict()[key], value), key
    assert all(torch.equal(fresh.head.state_dict()[key], value) for key, value in head.items())
    assert report.new_parameters(fresh) == ["head.weight", "head.bias"]


@pytest.mark.parametrize("name", FILES)
def test_every_file_the_project_writes_transfers_in_all_mode(trained, name):
    folder, network = trained
    fresh = TinyNetwork(seed=1)
    report = transfer_encoder(fresh, load_pretrained(folder / name), mode="all")
    encoder_only = name.startswith("exported")
    for key, value in network.state_dict().items():
        same = torch.equal(fresh.state_dict()[key], value)
        assert same if key.startswith("encoder.") or not encoder_only else not same, key
    assert report.new_parameters(fresh) == (["head.weight", "head.bias"] if encoder_only else [])


def test_a_detector_checkpoint_with_network_prefix_loads(trained, tmp_path):
    folder, network = trained
    torch.save({f"network.{key}": value for key, value in network.state_dict().items()}, tmp_path / "detector.pt")
    fresh = TinyNetwork(seed=1)
    transfer_encoder(fresh, load_pretrained(tmp_path / "detector.pt"), mode="all")
    assert all(torch.equal(fresh.state_dict()[key], value) for key, value in network.state_dict().items())

