"""Encoder weights cross between the paper's spacing arms (1 mm isotropic and the median spacing's
per-axis strides) wherever the kernel shapes agree, and are refused naming the first key where not."""

import logging

import pytest
import torch

from shared.checkpoints.loading import load_pretrained
from shared.checkpoints.manifest import export_encoder
from shared.checkpoints.transfer import transfer_encoder
from shared.networks.retina_unet import RetinaUNetNetwork
from shared.io.errors import InputError

ISOTROPIC = {"name": "plain", "preset": "tiny"}  # strides [1, 2, 2, 2], kernels 3


def _pretrained(tmp_path):
    torch.manual_seed(0)
    source = RetinaUNetNetwork(1, 1, encoder=ISOTROPIC, decoder_channels=16, detection_strides=[4, 8])
    manifest = export_encoder(source, tmp_path / "encoder", architecture=ISOTROPIC, in_channels=1, modality="CT",
                              spacing=[1.0, 1.0, 1.0], normalization="ct", method="mae")
    return source.encoder.state_dict(), load_pretrained(manifest)


def _network(detection_strides=(4, 8), **encoder):
    torch.manual_seed(1)
    return RetinaUNetNetwork(1, 1, encoder={**ISOTROPIC, **encoder}, decoder_channels=16,
                             detection_strides=detection_strides)


def test_isotropic_weights_load_into_anisotropic_strides_with_the_same_kernels(tmp_path, caplog):
    weights, pretrained = _pretrained(tmp_path)
    anisotropic = {"strides": [1, [2, 2, 1], 2, 2]}
    network = _network(**anisotropic)
    with caplog.at_level(logging.WARNING):
        report = transfer_encoder(network, pretrained, expected_architecture={**ISOTROPIC, **anisotropic})
    assert "spacing arms" in caplog.text
    assert not report.shape_mismatches and not report.missing_keys
    for key, value in network.encoder.state_dict().items():
        if not key.startswith("stages.0.0.convs.0."):  # the stem is random by default ("matching" takes it)
            torch.testing.assert_close(value, weights[key])


def test_anisotropic_kernels_are_refused_naming_the_first_mismatching_key(tmp_path):
    _, pretrained = _pretrained(tmp_path)
    planned = {"strides": [1, [2, 2, 1], 2, 2], "kernel_sizes": [[3, 3, 1], [3, 3, 1], 3, 3]}
    with pytest.raises(InputError, match=r"shape stages\.0\.0\.convs\.0\.conv\.weight: checkpoint \(8, 1, 3, 3, 3\) "
                                         r"vs network \(8, 1, 3, 3, 1\)"):
        transfer_encoder(_network(**planned), pretrained, expected_architecture={**ISOTROPIC, **planned})


def test_strides_that_are_not_another_spacing_arm_are_still_refused(tmp_path):
    _, pretrained = _pretrained(tmp_path)
    other = {"strides": [1, 1, 2, 2]}  # stage 1 stops pooling altogether: a different network
    with pytest.raises(InputError, match="architecture of the pre-trained encoder differs.*strides"):
        transfer_encoder(_network((2, 4), **other), pretrained, expected_architecture={**ISOTROPIC, **other})
