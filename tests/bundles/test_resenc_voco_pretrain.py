"""The VoCo pre-training bundle end to end: train (tiny), resume exactly with the teacher, export, fine-tuning
takes the encoder, previews in TensorBoard, the no-teacher ablation's override."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shared.bundles import check_metadata
from shared.checkpoints.weights import load_weights
from shared.data.synthetic.dataset import make_dataset
from shared.ssl.ema import MomentumTeacher, MomentumUpdate
from shared.ssl.voco import VolumeContrast
from shared.ssl.voco_previews import LAYOUT_TAG, OVERLAP_TAG
from tests.bundles._pretraining import (REPOSITORY, TINY, assert_encoder_export,
                                        assert_fine_tuning_takes_the_whole_encoder, assert_same_weights, config_list,
                                        run_bundle)

CONFIGS = REPOSITORY / "bundles" / "resenc_voco_pretrain" / "configs"
#: 2×2×1 base crops of 16³ (a 32×32×16 region) and 2 targets per scan, batches of 2 scans
TINY_VOCO = ["--encoder", json.dumps(TINY), "--crop_size", "[16,16,16]", "--num_targets", "2",
             "--projector_channels", "16", "--iterations_per_epoch", "2", "--epochs", "2", "--checkpoint_every", "2",
             "--preview_every", "2"]


def _tiny_network(**options) -> VolumeContrast:
    return VolumeContrast(1, encoder_spec=TINY, hidden_channels=16, out_channels=16, **options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """4 iterations straight into ``out``; the same run stopped after iteration 2 and started again into
    ``resumed``."""
    root = tmp_path_factory.mktemp("voco")
    counts = {"training": 0, "validation": 0, "test": 0, "unlabelled": 2}
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    # quick.json turns the per-crop augmentation off; train.json's is put back so that resuming is checked with it
    common = ["--config_file", config_list(CONFIGS, "train.json", "quick.json"), "--dataset_dir", str(root / "data"),
              *TINY_VOCO, "--crop_transforms", f"%{CONFIGS / 'train.json'}#crop_transforms"]
    run_bundle("run", *common, "--output_dir", str(root / "out"), cwd=root)
    run_bundle("run", *common, "--output_dir", str(root / "resumed"), "--train#trainer#max_epochs", "1", cwd=root)
    resumed = run_bundle("run", *common, "--output_dir", str(root / "resumed"), cwd=root)
    assert "resum" in resumed.stdout + resumed.stderr
    return root


def test_exported_encoder_is_the_students_with_its_manifest(trained):
    assert_encoder_export(trained / "out", "voco", spacing=2.5)  # quick.json's
    manifest = json.loads((trained / "out" / "encoder.json").read_text())
    settings = manifest["method_settings"]
    assert settings["teacher_momentum"] == 0.9 and settings["crop_size"] == [16, 16, 16]
    assert settings["base_counts"] == [2, 2, 1] and settings["num_targets"] == 2
    assert "RandFlip" in json.dumps(settings["augmentation"])  # train.json's per-crop augmentation is on
    state = torch.load(trained / "out" / "model.pt", weights_only=True)
    exported = torch.load(trained / "out" / "encoder.pt", weights_only=True)
    for key, value in exported.items():  # the student's encoder, not the teacher's
        assert torch.equal(value, state["encoder." + key]), key
    assert any(not torch.equal(value, state["teacher.module.encoder." + key]) for key, value in exported.items())


def test_a_run_stopped_and_started_again_ends_with_the_same_student_and_teacher(trained):
    assert list((trained / "resumed" / "checkpoints").glob("last_checkpoint_4.pt"))
    final = torch.load(trained / "resumed" / "model_final.pt", weights_only=True)
    assert any(key.startswith("teacher.module.encoder.") for key in final)
    assert_same_weights(trained / "out" / "model_final.pt", trained / "resumed" / "model_final.pt")
    assert_same_weights(trained / "out" / "encoder.pt", trained / "resumed" / "encoder.pt")


def test_model_loads_into_network_def_and_logs_hold_both_previews(trained):
    load_weights(_tiny_network(), trained / "out" / "model.pt")
    previews = list((trained / "out" / "logs").glob("*.previews"))
    assert len(previews) == 1
    events = EventAccumulator(str(previews[0]), size_guidance={"images": 0}).Reload()
    assert [event.step for event in events.Images(LAYOUT_TAG)] == [1, 2, 4]
    overlaps = events.Images(OVERLAP_TAG)
    assert [event.step for event in overlaps] == [1, 2, 4]
    assert (overlaps[0].width, overlaps[0].height) == ((2 * 4 + 1) * 8, 2 * 8)


def test_the_ablation_override_removes_the_teacher_and_keeps_its_handler_harmless():
    # `--teacher_momentum None` would be dropped by MONAI's command line (it ignores None): the docs say '$None'
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")])
    parser.update({"encoder": TINY, "projector_channels": 16})
    assert isinstance(parser.get_parsed_content("network_def").teacher, MomentumTeacher)
    parser.update({"teacher_momentum": "$None"})
    parser.parse(reset=True)
    assert parser.get_parsed_content("network_def").teacher is None
    index = [handler["_target_"] for handler in parser.get("train#handlers")].index("shared.ssl.ema.MomentumUpdate")
    update = parser.get_parsed_content(f"train#handlers#{index}")
    assert isinstance(update, MomentumUpdate) and update.teacher is None


def test_fine_tuning_takes_the_whole_encoder(trained):
    assert_fine_tuning_takes_the_whole_encoder(trained / "out")


def test_network_in_out_and_metadata():
    check_metadata(CONFIGS / "metadata.json")
    # crops alone give their pooled features: 368 channels for the quick (small) encoder, 1,120 for ResEnc-L
    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"), device="cpu",
                      config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")],
                      **{"_meta_#network_data_format#outputs#pred#num_channels": 368})
