import json
import logging

import pytest

import shared.engines.finetune as finetune
from shared.networks.retina_unet import RetinaUNetNetwork
from shared.io.errors import InputError


def _network() -> RetinaUNetNetwork:
    return RetinaUNetNetwork(1, 2, encoder={"name": "plain", "preset": "tiny"}, decoder_channels=16,
                             detection_strides=[4, 8])


def test_no_encoder_trains_from_scratch():
    assert finetune.load_pretrained_encoder(_network(), None) is None
    assert finetune.freeze_iterations(None, 100) == 0
    assert finetune.freeze_phase(_network(), None, 5).freeze_iterations == 0


def test_an_unreadable_encoder_is_a_user_error_naming_it(monkeypatch):
    # root reads every file whatever its mode, so the refusal of the file system is simulated
    def refused(path, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(finetune, "load_pretrained", refused)
    with pytest.raises(InputError, match="enc.pt: the pre-trained encoder cannot be read: Permission denied"):
        finetune.load_pretrained_encoder(_network(), "enc.pt")


def _exported_encoder(folder, spacing, normalization):
    from shared.checkpoints.manifest import export_encoder
    from shared.data.pretraining import NORMALIZATION

    encoder = {"name": "plain", "preset": "tiny"}
    export_encoder(_network(), folder, architecture=encoder, in_channels=1, modality="CT", spacing=spacing,
                   normalization=NORMALIZATION if normalization == "per_image" else normalization, method="mae")
    return folder


def _datalist(path, modality):
    path.write_text(json.dumps({"modality": modality, "training": []}))
    return str(path)


def test_a_spacing_or_normalisation_other_than_pre_training_is_warned_about(tmp_path, caplog):
    folder = _exported_encoder(tmp_path / "encoder", [1.5, 1.5, 1.5], "per_image")
    with caplog.at_level(logging.WARNING, logger=finetune.__name__):
        finetune.load_pretrained_encoder(_network(), folder, spacing=[2.0, 2.0, 2.0],
                                         datalist=_datalist(tmp_path / "ct.json", "CT"))
    warned = " ".join(record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    assert "pre-trained at spacing [1.5, 1.5, 1.5] mm, fine-tuned at [2.0, 2.0, 2.0] mm" in warned
    assert "normalisation: pre-trained with per-image z-score, fine-tuned with CT" in warned


@pytest.mark.parametrize("spacing, modality", [([1.5, 1.5, 1.5], "MRI"), ("1.5,1.5,1.5", "MRI"), ("median", "MRI")])
def test_matching_preprocessing_gives_no_warning(tmp_path, caplog, spacing, modality):
    folder = _exported_encoder(tmp_path / "encoder", [1.5, 1.5, 1.5], "per_image")
    with caplog.at_level(logging.WARNING, logger=finetune.__name__):
        finetune.load_pretrained_encoder(_network(), folder, spacing=spacing,
                                         datalist=_datalist(tmp_path / "d.json", modality))
    assert not [record for record in caplog.records if record.levelno == logging.WARNING]


def test_the_fixed_spacing_is_compared_too(tmp_path, caplog):
    folder = _exported_encoder(tmp_path / "encoder", [1.5, 1.5, 1.5], "CTNormalization")
    with caplog.at_level(logging.WARNING, logger=finetune.__name__):
        finetune.load_pretrained_encoder(_network(), folder, spacing="fixed",
                                         datalist=_datalist(tmp_path / "d.json", "CT"))
    warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warned) == 1 and "fine-tuned at [1.0, 1.0, 1.0] mm" in warned[0]
