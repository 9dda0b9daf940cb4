import pytest

import shared.engines.finetune as finetune
from shared.detectors.retina_unet_network import RetinaUNetNetwork
from shared.io.errors import InputError


def _network() -> RetinaUNetNetwork:
    return RetinaUNetNetwork(1, 2, encoder={"name": "plain", "preset": "tiny"}, decoder_channels=16,
                             detection_strides=[4, 8])


def test_no_encoder_trains_from_scratch():
    assert finetune.load_pretrained_encoder(_network(), None) is None
    assert finetune.freeze_iterations(None, 100) == 0 and finetune.warmup_handlers(_network(), None, 5) == []


def test_an_unreadable_encoder_is_a_user_error_naming_it(monkeypatch):
    # root reads every file whatever its mode, so the refusal of the file system is simulated
    def refused(path, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(finetune, "load_pretrained", refused)
    with pytest.raises(InputError, match="enc.pt: the pre-trained encoder cannot be read: Permission denied"):
        finetune.load_pretrained_encoder(_network(), "enc.pt")
