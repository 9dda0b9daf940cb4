"""Exporting a pre-trained encoder: the manifest records the data and the weights load back."""

from __future__ import annotations

import json

import torch

from shared.checkpoints.loading import load_pretrained
from shared.checkpoints.safe_load import sha256_file
from shared.data.pretraining import NORMALIZATION, PretrainingData
from shared.networks.resenc_unet import ResEncUNet
from shared.ssl.export import export_pretrained_encoder


def test_export_round_trip(tmp_path):
    network = ResEncUNet(2, 2, encoder_spec={"name": "resenc", "preset": "tiny"})
    plan = {"target_spacing": [1.5, 1.5, 1.5], "datalist_sha256": "abc",
            "channels": [{"modality": "MRI", "per_image": True}, {"modality": "MRI", "per_image": True}]}
    data = PretrainingData(plan, ["a", "b", "c"], str(tmp_path / "datalist.json"), ["unlabelled"])
    path = export_pretrained_encoder(network, tmp_path / "out", data, architecture={"name": "resenc", "preset": "tiny"},
                                     method="mae", method_settings={"mask_ratio": 0.75})
    manifest = json.loads(path.read_text())
    assert manifest["in_channels"] == 2 and manifest["modality"] == "MRI"
    assert manifest["spacing"] == [1.5, 1.5, 1.5] and manifest["normalization"] == NORMALIZATION
    assert manifest["data"]["num_volumes"] == 3 and manifest["data"]["splits"] == ["unlabelled"]
    assert manifest["method"] == "mae" and manifest["method_settings"] == {"mask_ratio": 0.75}
    assert manifest["weights"]["sha256"] == sha256_file(tmp_path / "out" / "encoder.pt")
    loaded = load_pretrained(tmp_path / "out")
    expected = network.encoder.state_dict()
    assert loaded.state_dict.keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict[key], expected[key]) for key in expected)
