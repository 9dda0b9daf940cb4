import json

import pytest
import torch

from shared.checkpoints.loading import load_pretrained
from shared.checkpoints.transfer import check_weights_fit_architecture, transfer_encoder
from shared.io.errors import InputError
from shared.networks.deformable_detr import DeformableDETRNetwork
from shared.networks.multitalent import MultiTalentNetwork, SegmentationTask
from shared.networks.retina_unet import RetinaUNetNetwork
from shared.ssl.multitalent import export_multitalent_encoder, tasks_from_manifest

TASKS = [
    {"name": "lung_ct", "in_channels": 1, "classes": ["lungs", "vessels", "nodules"]},
    {"name": "brain_mri", "in_channels": 2, "classes": ["tissue", "lesion"], "kind": "regions"},
    {"name": "chest", "in_channels": 1, "classes": ["heart"]},
]
ENCODERS = [{"name": "resenc", "preset": "tiny"}, {"name": "plain", "preset": "tiny"}]


def exported(tmp_path, encoder, seed=0):
    torch.manual_seed(seed)
    network = MultiTalentNetwork(TASKS, encoder_spec=encoder)
    with torch.no_grad():  # distinct, non-default values everywhere (norms included)
        for parameter in network.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    path = export_multitalent_encoder(network, tmp_path / "mt", spacing=[1, 1, 1],
                                      modality=["CT", "MRI"], method_settings={"iterations": 3})
    return network, path


def detector(encoder, in_channels, kind="retina_unet"):
    if kind == "deformable_detr":
        return DeformableDETRNetwork(in_channels, 1, encoder=encoder, num_levels=3, num_queries=4, hidden_channels=16,
                                     num_heads=2, num_points=1, encoder_layers=1, decoder_layers=1,
                                     feedforward_channels=16, mapper_groups=4)
    return RetinaUNetNetwork(in_channels, 1, encoder=encoder, decoder_channels=16, detection_strides=[4, 8],
                             num_anchors=3)


def stem_state(network, name):
    return network.stems[name].state_dict()


def detector_stem(retina, network):
    return {key: value for key, value in retina.encoder.state_dict().items()
            if key.startswith(network.encoder_stem_path + ".")}


def same_features(network, name, retina, channels):
    """The detector's encoder gives the MultiTalent network's features for that data set's stem."""
    network.eval(), retina.eval()
    images = torch.randn(1, channels, 16, 16, 16)
    expected = network.encoder(network.stems[name](images))
    for found, wanted in zip(retina.encoder(images), expected):
        torch.testing.assert_close(found, wanted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_manifest_lists_every_stem_with_its_channels(tmp_path, encoder):
    network, path = exported(tmp_path, encoder)
    manifest = json.loads(path.read_text())
    assert manifest["method"] == "multitalent" and manifest["in_channels"] == 1
    assert manifest["architecture"] == encoder and manifest["stem_keys"] == [network.encoder_stem_path + "."]
    assert manifest["stems"]["ids"] == {"lung_ct": 1, "brain_mri": 2, "chest": 1}
    assert manifest["method_settings"] == {"iterations": 3, "main_stem": "lung_ct"}
    assert manifest["data"]["datasets"]["brain_mri"] == {"in_channels": 2, "classes": ["tissue", "lesion"],
                                                         "kind": "regions"}
    pretrained = load_pretrained(path.parent)
    check_weights_fit_architecture(pretrained)
    for name in network.task_names:
        assert all(torch.equal(pretrained.stems[name][k], v) for k, v in stem_state(network, name).items())


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("how", ["stem_id", "matching", "load_pretrained"])
@pytest.mark.parametrize("kind", ["retina_unet", "deformable_detr"])
def test_round_trip_into_the_detector_by_id_and_by_channel_count(tmp_path, encoder, how, kind):
    network, path = exported(tmp_path, encoder)
    retina = detector(encoder, 2, kind)
    if how == "stem_id":
        report = transfer_encoder(retina, load_pretrained(path), stem_id="brain_mri", expected_architecture=encoder)
    elif how == "matching":  # the only two-channel stem
        report = transfer_encoder(retina, load_pretrained(path), stem="matching", expected_architecture=encoder)
    else:  # the fine-tuning engine's route: load_pretrained(stem=...)
        report = transfer_encoder(retina, load_pretrained(path, stem="brain_mri"), expected_architecture=encoder)
        how = "main"
    assert report.stem_source == ("brain_mri" if how != "main" else "main")
    assert report.missing_keys == report.unexpected_keys == report.shape_mismatches == []
    assert sorted(report.transferred_keys) == sorted("encoder." + key for key in retina.encoder.state_dict())
    same_features(network, "brain_mri", retina, 2)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_single_channel_stem_by_id_and_its_refusals(tmp_path, encoder):
    network, path = exported(tmp_path, encoder)
    retina = detector(encoder, 1)
    report = transfer_encoder(retina, load_pretrained(path), stem_id="chest")
    assert report.stem_source == "chest"
    same_features(network, "chest", retina, 1)
    report = transfer_encoder(detector(encoder, 1), load_pretrained(path))  # matching: the main (lung_ct) stem
    assert report.stem_source == "main"
    with pytest.raises(InputError, match="stem 'brain_mri' takes 2 input channel.*the network 1"):
        transfer_encoder(detector(encoder, 1), load_pretrained(path), stem_id="brain_mri")
    with pytest.raises(InputError, match=r"has no stem 'liver' \(stems and their channels: lung_ct \(1\), brain_mri"):
        transfer_encoder(detector(encoder, 1), load_pretrained(path), stem_id="liver")
    with pytest.raises(InputError, match="has no stem 'liver'"):
        load_pretrained(path, stem="liver")
    retina = detector(encoder, 4)  # replicate a chosen single-channel stem for four channels
    report = transfer_encoder(retina, load_pretrained(path), stem="replicate", stem_id="chest")
    weight = next(v for k, v in stem_state(network, "chest").items() if v.ndim == 5)
    found = next(v for k, v in detector_stem(retina, network).items() if v.ndim == 5)
    torch.testing.assert_close(found, weight.repeat(1, 4, 1, 1, 1) / 4)


def test_the_export_rebuilds_its_network_without_the_datalist(tmp_path):
    regions = [*TASKS[:2], {"name": "chest", "in_channels": 1, "classes": ["heart", "vessels"], "kind": "regions",
                            "regions": [[1, 2], [2]]}]
    network = MultiTalentNetwork(regions, encoder_spec=ENCODERS[0])
    path = export_multitalent_encoder(network, tmp_path / "mt", spacing=[1, 1, 1], modality="CT")
    tasks = tasks_from_manifest(path.parent)  # the folder, as inference.json passes model_dir
    assert [SegmentationTask.from_spec(task) for task in tasks] == list(network.tasks)
    rebuilt = MultiTalentNetwork(tasks, encoder_spec=ENCODERS[0])
    rebuilt.load_state_dict(network.state_dict())  # strict: every key, every shape

    with pytest.raises(InputError, match="no encoder manifest"):
        tasks_from_manifest(tmp_path / "nothing")
    other = tmp_path / "other" / "encoder.json"
    other.parent.mkdir()
    other.write_text(json.dumps({"method": "mae", "data": {"splits": ["unlabelled"]}}))
    with pytest.raises(InputError, match="not a MultiTalent export"):
        tasks_from_manifest(other)
