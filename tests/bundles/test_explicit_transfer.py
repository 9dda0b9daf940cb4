"""Loading a pre-trained encoder is its own step (``initialize``), not a side effect of the trainer node.

The configs are parsed and their ``initialize`` run without training (tiny encoder, spacing from
quick.json, so no data is read): a user who replaces the trainer and its handlers keeps the transfer,
and the freeze phase reads what was transferred.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from shared.checkpoints.manifest import export_encoder
from shared.networks.retina_unet import RetinaUNetNetwork

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
NETWORK = {"decoder_channels": 16, "detection_strides": [4, 8]}


def _parser(bundle: str, tmp_path: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / name) for name in ("train.json", "quick.json")])
    name = parser.get("encoder")["name"]
    settings = {"encoder": {"name": name, "preset": "tiny"}, **NETWORK, "output_dir": str(tmp_path / "out"),
                "dataset_dir": str(tmp_path / "no_data")}
    for key, value in {**settings, **overrides}.items():
        parser[key] = value
    return parser


@pytest.mark.parametrize("bundle", ["retina_unet_detection", "resenc_retina_unet_detection"])
def test_an_edited_trainer_node_keeps_the_transfer_and_the_freeze_reads_it(bundle, tmp_path, caplog):
    name = ConfigParser.load_config_file(str(BUNDLES / bundle / "configs" / "train.json"))["encoder"]["name"]
    torch.manual_seed(3)
    source = RetinaUNetNetwork(1, 2, encoder={"name": name, "preset": "tiny"}, **NETWORK)
    manifest = export_encoder(source, tmp_path / "encoder", architecture={"name": name, "preset": "tiny"},
                              in_channels=1, modality="CT", spacing=[1.5, 1.5, 1.5], normalization="ct",
                              method="mae")
    # a user's own trainer node: none of the bundle's handlers, nothing that mentions the transfer
    trainer = {"_target_": "shared.engines.trainer.LossDictTrainer", "device": "cpu", "max_epochs": 1,
               "train_data_loader": [], "network": "@network", "optimizer": "@optimizer"}
    parser = _parser(bundle, tmp_path, pretrained_encoder=str(manifest), **{"train#trainer": trainer})
    with caplog.at_level(logging.INFO, logger="shared.engines.finetune"):
        parser.get_parsed_content("initialize")
    network = parser.get_parsed_content("network_def")
    loaded = source.encoder.state_dict()
    same = [key for key, value in network.encoder.state_dict().items() if torch.equal(value, loaded[key])]
    report = parser.get_parsed_content("transfer")
    assert len(same) >= len(report.transferred_keys) > 0
    assert any(f"transferred {len(report.transferred_keys)} tensors from {manifest}" in record.getMessage()
               for record in caplog.records)
    # the freeze phase and the schedule are sized from the transfer's report
    index = next(index for index, node in enumerate(parser.get("train#handlers"))
                 if isinstance(node, dict) and node.get("_target_") == "shared.engines.finetune.freeze_phase")
    phase = parser.get_parsed_content(f"train#handlers#{index}")
    iterations = parser.get_parsed_content("freeze_iterations")
    assert iterations == parser.get_parsed_content("freeze_epochs") * parser.get_parsed_content("iterations_per_epoch")
    assert phase.freeze_iterations == iterations > 0
    assert phase.names == {key for key, _ in network.named_parameters() if key.startswith("encoder.")}


def test_without_a_pretrained_encoder_there_is_no_freeze_phase(tmp_path):
    parser = _parser("retina_unet_detection", tmp_path)
    parser.get_parsed_content("initialize")
    assert parser.get_parsed_content("transfer") is None and parser.get_parsed_content("freeze_iterations") == 0
