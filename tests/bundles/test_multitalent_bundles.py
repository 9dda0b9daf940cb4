"""The two MultiTalent pre-training bundles end to end on a tiny embedded collection: train, resume exactly,
export the encoder with every stem, a detector takes the encoder and the stem it asks for, inference segments
a scan of one data set; MONAI's workflow properties and metadata."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from shared.bundles import check_metadata
from shared.checkpoints.safe_load import sha256_file
from shared.checkpoints.weights import load_weights
from shared.data.synthetic.multitalent import make_multitalent_dataset
from shared.encoders import build_encoder
from shared.engines.finetune import load_pretrained_encoder
from shared.io.multi_datalist import read_multi_datalist, tasks_of
from shared.networks.retina_unet import RetinaUNetNetwork
from shared.ssl.multitalent import DatasetSegmenter, MultiTalent, class_dice
from tests.bundles._pretraining import REPOSITORY, assert_same_weights, run_workflow

BUNDLES = {"resenc_multitalent_pretrain": {"name": "resenc", "preset": "tiny"},
           "retina_unet_multitalent_pretrain": {"name": "plain", "preset": "tiny"}}
DECODER_CONVS = {"resenc_multitalent_pretrain": 1, "retina_unet_multitalent_pretrain": 2}
STEMS = {"lung_ct": 1, "brain_mri": 2, "chest_ct": 1}


def configs(bundle: str) -> Path:
    return REPOSITORY / "bundles" / bundle / "configs"


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """Three data sets (1, 2 and 1 channels), two training cases and one validation case each."""
    root = tmp_path_factory.mktemp("multitalent_data")
    make_multitalent_dataset(root, counts={"training": 2, "validation": 1}, shape=(32, 32, 24), progress=False)
    return root


def tiny(bundle: str, data: Path) -> dict:
    return {"dataset_dir": str(data), "encoder": BUNDLES[bundle], "patch_size": [32, 32, 32],
            "iterations_per_epoch": 2, "epochs": 2, "checkpoint_every": 2}


@pytest.fixture(scope="module", params=list(BUNDLES))
def trained(request, collection, tmp_path_factory) -> tuple[str, Path]:
    """4 iterations straight into ``out``; the same run stopped after epoch 1 and started again into
    ``resumed``; inference on the lung_ct validation scan into ``segmentations``."""
    bundle, root = request.param, tmp_path_factory.mktemp(request.param)
    names, common = ["train.json", "quick.json"], tiny(request.param, collection)
    run_workflow(configs(bundle), names, {**common, "output_dir": str(root / "out")}, root)
    run_workflow(configs(bundle), names, {**common, "output_dir": str(root / "resumed"), "train#trainer#max_epochs": 1},
                 root)
    assert (root / "resumed" / "checkpoints" / "last_checkpoint_2.pt").is_file()
    run_workflow(configs(bundle), names, {**common, "output_dir": str(root / "resumed")}, root)
    run_workflow(configs(bundle), ["inference.json", "quick.json"],
                 {"dataset_dir": str(collection), "encoder": BUNDLES[bundle], "patch_size": [32, 32, 32],
                  "model_dir": str(root / "out"), "prediction_dir": str(root / "segmentations")}, root, "infer")
    return bundle, root


def test_export_holds_the_encoder_and_every_stem_with_its_data_set_and_channels(trained):
    bundle, root = trained
    out = root / "out"
    manifest = json.loads((out / "encoder.json").read_text())
    assert manifest["method"] == "multitalent" and manifest["architecture"] == BUNDLES[bundle]
    assert manifest["weights"]["sha256"] == sha256_file(out / "encoder.pt")
    assert manifest["stems"]["sha256"] == sha256_file(out / "stems.pt") and manifest["stems"]["ids"] == STEMS
    assert manifest["in_channels"] == 1 and manifest["method_settings"]["main_stem"] == "lung_ct"
    assert manifest["spacing"] == [1.5, 1.5, 1.5] and manifest["normalization"] == "per-image z-score"
    assert manifest["data"]["num_volumes"] == 6 and manifest["method_settings"]["iterations"] == 4
    assert manifest["data"]["datasets"]["brain_mri"]["classes"] == ["CSF", "grey matter", "white matter", "lesions"]
    state = torch.load(out / "encoder.pt", weights_only=True)
    assert state.keys() == build_encoder(BUNDLES[bundle], 1).state_dict().keys()
    # the encoder's own stem is lung_ct's, the rest is the trained network's shared encoder
    model = load_weights(MultiTalent(tasks_of(read_multi_datalist(manifest["data"]["datalist"])),
                                     encoder_spec=BUNDLES[bundle], decoder_convs_per_stage=DECODER_CONVS[bundle],
                                     deep_supervision=True), out / "model.pt")
    stem = model.network.encoder_stem_path + "."
    for key, value in model.network.stems["lung_ct"].state_dict().items():
        assert torch.equal(state[stem + key], value)
    for key, value in model.network.encoder.state_dict().items():
        assert torch.equal(state[key], value)


def test_a_run_stopped_and_started_again_ends_with_the_same_weights(trained):
    _, root = trained
    assert (root / "resumed" / "checkpoints" / "last_checkpoint_4.pt").is_file()
    for name in ("model_final.pt", "encoder.pt", "stems.pt"):
        assert_same_weights(root / "out" / name, root / "resumed" / name)


def test_tensorboard_holds_the_loss_and_dice_of_every_data_set_and_their_validation_dice(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, root = trained
    tags = set()
    for path in (root / "out" / "logs").glob("events.out.tfevents.*"):
        events = EventAccumulator(str(path))
        events.Reload()
        tags |= set(events.Tags()["scalars"])
    # quick.json logs every iteration; these 4 batches of 2 hold every data set (a fixed seed)
    assert {"train/loss", *(f"train/{kind}/{name}" for kind in ("loss", "dice") for name in STEMS)} <= tags
    # and validates after its last epoch: each data set's validation scan, whole, through its own stem
    assert {"val/dice", *(f"val/dice/{name}" for name in STEMS)} <= tags


@pytest.mark.parametrize("channels, stem, stem_id", [(2, "matching", None), (1, "matching", "chest_ct"),
                                                     (1, "matching", None)])
def test_a_detector_takes_the_encoder_and_the_stem_it_asks_for(trained, channels, stem, stem_id):
    """The detector bundles' ``transfer`` node calls ``load_pretrained_encoder`` with ``stem`` and ``stem_id``;
    by channel count the 2-channel detector gets brain_mri's stem, the 1-channel one the main (lung_ct) stem."""
    bundle, root = trained
    out = root / "out"
    network = RetinaUNetNetwork(channels, 2, encoder=BUNDLES[bundle], decoder_channels=16, detection_strides=[4, 8])
    report = load_pretrained_encoder(network, str(out / "encoder.json"), stem=stem, stem_id=stem_id,
                                     expected_architecture=BUNDLES[bundle])
    assert not report.missing_keys and not report.unexpected_keys and not report.shape_mismatches
    expected = stem_id or {1: "lung_ct", 2: "brain_mri"}[channels]
    exported = torch.load(out / "encoder.pt", weights_only=True)
    stems = torch.load(out / "stems.pt", weights_only=True)  # flat: "<data set>.<key within the stem>"
    prefix = network.encoder.stem_keys[0]
    for key, value in network.encoder.state_dict().items():
        wanted = stems[expected + "." + key[len(prefix):]] if key.startswith(prefix) else exported[key]
        assert torch.equal(value, wanted), key


def test_the_detector_bundles_pass_stem_and_stem_id_to_the_transfer():
    for detector in ("retina_unet_detection", "resenc_retina_unet_detection"):
        parser = ConfigParser()
        parser.read_config(str(REPOSITORY / "bundles" / detector / "configs" / "train.json"))
        assert parser["transfer"]["stem"] == "@stem" and parser["transfer"]["stem_id"] == "@stem_id"


def test_inference_segments_a_scan_of_one_data_set_through_its_stem(trained, collection):
    bundle, root = trained
    results = json.loads((root / "segmentations" / "segmentations.json").read_text())
    assert [result["case"] for result in results] == ["lung_ct_va_000"]
    assert set(results[0]["dice"]) == {"lungs", "vessels", "nodules"} and Path(results[0]["file"]).is_file()
    # the segmenter is the trained network's block of that data set, its image padded to the widest data set
    tasks = tasks_of(read_multi_datalist(collection / "multitalent.json"))
    arguments = {"encoder_spec": BUNDLES[bundle], "decoder_convs_per_stage": DECODER_CONVS[bundle],
                 "deep_supervision": True}
    model = load_weights(MultiTalent(tasks, **arguments), root / "out" / "model.pt").eval()
    segmenter = load_weights(DatasetSegmenter(tasks, "brain_mri", **arguments), root / "out" / "model.pt").eval()
    images = torch.randn(2, 2, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.network(images, ["brain_mri"] * 2)["seg_logits"][:, model.network.channel_slices["brain_mri"]]
        torch.testing.assert_close(segmenter(images), expected, rtol=0, atol=0)


def test_the_written_dice_is_twice_the_overlap_over_the_sizes():
    predicted, target = np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 1], bool)
    assert class_dice(predicted, target) == pytest.approx(2 * 1 / 5)
    assert class_dice(predicted, predicted) == 1.0 and class_dice(~predicted & predicted, target & False) is None


@pytest.mark.parametrize("bundle", list(BUNDLES))
def test_workflows_define_monai_properties(bundle, collection, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # initialize installs the bundles' exception hook
    models = tmp_path / "models"
    models.mkdir()
    # an export's manifest: the network is built from the data sets it lists
    datasets = {task.pop("name"): task for task in tasks_of(read_multi_datalist(collection / "multitalent.json"))}
    (models / "encoder.json").write_text(json.dumps({"modality": "CT", "in_channels": 1, "spacing": [1.5] * 3,
                                                     "data": {"datasets": datasets}}))
    parser = ConfigParser()
    parser.read_config(str(configs(bundle) / "inference.json"))
    parser.update({"encoder": BUNDLES[bundle], "dataset_dir": str(collection), "model_dir": str(models)})
    torch.save(parser.get_parsed_content("network_def").state_dict(), models / "model.pt")  # random weights
    runs = [("train", ["train.json", "quick.json"], {**tiny(bundle, collection), "output_dir": str(tmp_path / "out")}),
            ("infer", ["inference.json"], {"encoder": BUNDLES[bundle], "patch_size": [32, 32, 32], "max_scans": 1,
                                           "dataset_dir": str(collection), "model_dir": str(models),
                                           "prediction_dir": str(tmp_path / "segmentations")})]
    previous = Path.cwd()
    os.chdir(tmp_path)  # not the bundle: bundle_root must still be the bundle's folder
    try:
        for workflow_type, names, overrides in runs:
            workflow = ConfigWorkflow(config_file=[str(configs(bundle) / name) for name in names],
                                      workflow_type=workflow_type, logging_file=False, **overrides)
            workflow.initialize()
            assert Path(workflow.bundle_root) == configs(bundle).parent
            assert workflow.check_properties() == []
    finally:
        os.chdir(previous)


@pytest.mark.parametrize("bundle", list(BUNDLES))
def test_metadata_and_the_files_of_the_bundle(bundle):
    check_metadata(configs(bundle) / "metadata.json")
    for path in configs(bundle).glob("*.json"):  # as the Model Zoo's pretty-format-json hook writes them
        assert json.dumps(json.loads(path.read_text()), indent=4) + "\n" == path.read_text(), path
    parser = ConfigParser()
    parser.read_config([str(configs(bundle) / name) for name in ("train.json", "multi_gpu_train.json")])
    assert "DistributedDataParallel" in parser["model"] and "find_unused_parameters=True" in parser["model"]
