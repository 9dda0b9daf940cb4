"""The two Retina U-Net bundles end to end, through ``python -m monai.bundle`` from another folder.

The plain-encoder bundle runs every command once on tiny generated data (train, resume, evaluate,
inference, verify_net_in_out, ckpt_export) and every bad input; the ResEnc bundle, whose configs differ
only in the encoder, runs what differs: its metadata and network, and fine-tuning from an exported
encoder. Sizes: tiny presets, 32³ patches, 2 iterations.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from shared.bundles import check_metadata
from shared.checkpoints.weights import load_weights
from shared.data.synthetic.baseline import average_precision_at
from shared.data.synthetic.dataset import make_dataset
from shared.detectors.export import split_dense_output
from shared.detectors.retina_unet import RetinaUNetDetector
from shared.networks.retina_unet import RetinaUNetNetwork
from tests.bundles._detector_bundles import fine_tune_from_exported_encoder

REPOSITORY = Path(__file__).resolve().parents[2]
PLAIN = REPOSITORY / "bundles" / "retina_unet_detection" / "configs"
RESENC = REPOSITORY / "bundles" / "resenc_retina_unet_detection" / "configs"
NETWORK = {"decoder_channels": 16, "detection_strides": [4, 8]}


def _tiny(encoder_name: str) -> list[str]:
    encoder = {"name": encoder_name, "preset": "tiny"}
    return ["--encoder", json.dumps(encoder), "--decoder_channels", "16", "--detection_strides", "[4,8]"]


TRAIN = ["--patch_size", "[32,32,32]", "--batch_size", "2", "--iterations_per_epoch", "2", "--epochs", "1",
         "--lr_warmup_iterations", "1", "--checkpoint_every", "2"]


def _bundle(*arguments: str, cwd: Path, expect_failure: bool = False, command: list[str] | None = None
            ) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}
    command = command or [sys.executable, "-m", "monai.bundle"]
    result = subprocess.run([*command, *arguments], cwd=cwd, env=environment, capture_output=True, text=True,
                            timeout=300)
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert (result.returncode != 0) == expect_failure, output
    return result


def _configs(folder: Path, *names: str) -> str:
    return "[" + ",".join(f"'{folder / name}'" for name in names) + "]"


def _network(encoder_name: str = "plain", **kwargs) -> RetinaUNetNetwork:
    return RetinaUNetNetwork(1, 2, encoder={"name": encoder_name, "preset": "tiny"}, **NETWORK, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Data, a 2-iteration training run of the plain bundle and its inference, run from ``root/elsewhere``."""
    root = tmp_path_factory.mktemp("detector")
    counts = {"training": 3, "validation": 1, "test": 1, "unlabelled": 0}
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    (root / "elsewhere").mkdir()
    common = ["--dataset_dir", str(root / "data"), "--output_dir", str(root / "out"), *_tiny("plain")]
    _bundle("run", "--config_file", _configs(PLAIN, "train.json", "quick.json"), *common, *TRAIN,
            cwd=root / "elsewhere")
    _bundle("run", "--config_file", _configs(PLAIN, "inference.json", "quick.json"), *common,
            "--model_dir", str(root / "out"), "--prediction_dir", str(root / "predictions"), "--write_box_maps", "True",
            cwd=root / "elsewhere")
    return root


def test_training_writes_a_model_that_loads_into_network_def(trained):
    out = trained / "out"
    load_weights(_network(), out / "model.pt")
    plan = json.loads((out / "model_plan.json").read_text())
    assert plan["patch_size"] == [32, 32, 32] and plan["detection_strides"] == [4, 8]
    assert (out / "checkpoints" / "last_checkpoint_2.pt").is_file()


def test_training_resumes_from_its_checkpoint(trained):
    result = _bundle("run", "--config_file", _configs(PLAIN, "train.json", "quick.json"), "--dataset_dir",
                     str(trained / "data"), "--output_dir", str(trained / "out"), *_tiny("plain"), *TRAIN[:-6],
                     "--epochs", "2", "--lr_warmup_iterations", "1", "--checkpoint_every", "2", cwd=trained)
    assert "resuming from" in result.stdout + result.stderr
    assert (trained / "out" / "checkpoints" / "last_checkpoint_4.pt").is_file()
    load_weights(_network(), trained / "out" / "model.pt")


def test_inference_json_alone_rebuilds_the_trained_network_from_its_plan(trained, tmp_path):
    # trained with quick.json and tiny overrides; the plain inference config, told only where the model
    # is, builds the same network from model_plan.json and finds the same boxes as with the overrides
    plan = json.loads((trained / "out" / "model_plan.json").read_text())
    assert plan["network"]["target"] == "shared.networks.retina_unet.RetinaUNetNetwork"
    assert plan["network"]["arguments"]["encoder"] == {"name": "plain", "preset": "tiny"}
    assert plan["network"]["arguments"]["decoder_channels"] == 16
    # inference settings are not the network: the same in both runs (inference.json's own mirroring and
    # batch, every candidate kept so that an untrained model has boxes to compare)
    same_settings = ["--inference#mirror", "True", "--inference#batch_size", "4", "--inference#score_threshold", "0.0",
                     "--tile_score_threshold", "0.0"]
    _bundle("run", "--config_file", _configs(PLAIN, "inference.json", "quick.json"), "--dataset_dir",
            str(trained / "data"), "--model_dir", str(trained / "out"), *_tiny("plain"), *same_settings,
            "--prediction_dir", str(tmp_path / "with_overrides"), cwd=tmp_path)
    _bundle("run", "--config_file", str(PLAIN / "inference.json"), "--dataset_dir", str(trained / "data"),
            "--model_dir", str(trained / "out"), "--prediction_dir", str(tmp_path / "alone"), *same_settings[4:],
            cwd=tmp_path)
    reference = json.loads((tmp_path / "with_overrides" / "predictions.json").read_text())
    alone = json.loads((tmp_path / "alone" / "predictions.json").read_text())
    assert len(alone) == len(reference) == 1 and len(reference[0]["box"]) > 0
    np.testing.assert_allclose(alone[0]["box"], reference[0]["box"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone[0]["label_scores"], reference[0]["label_scores"], rtol=1e-5, atol=1e-6)
    assert alone[0]["label"] == reference[0]["label"]


def test_a_copy_of_the_bundle_elsewhere_uses_its_own_model_and_writes_outside_it(trained, tmp_path):
    # a downloaded bundle with its own model (shipped into it the documented way, replacing the repository's
    # weights and their sha256), run by its full config path from a third folder; nothing but the copy's
    # files is read and nothing is written into it
    from shared.bundles.shipping import ship_weights

    copy = tmp_path / "downloaded" / "retina_unet_detection"
    shutil.copytree(PLAIN.parent, copy, ignore=shutil.ignore_patterns("models"))
    for name in ("model.pt", "model_plan.json"):
        ship_weights(copy, trained / "out" / name)
    shipped = sorted(path.relative_to(copy) for path in copy.rglob("*"))
    work = tmp_path / "work"
    work.mkdir()
    _bundle("run", "--config_file", str(copy / "configs" / "inference.json"), "--dataset_dir", str(trained / "data"),
            cwd=work)
    written = json.loads((work / "runs" / "retina_unet_detection" / "predictions" / "predictions.json").read_text())
    assert [Path(entry["image"]).name for entry in written] == ["lung_ct_ts_000_0000.nii.gz"]
    assert sorted(path.relative_to(copy) for path in copy.rglob("*")) == shipped


def test_inference_writes_per_scan_and_combined_outputs_and_box_maps(trained):
    predictions = trained / "predictions"
    combined = json.loads((predictions / "predictions.json").read_text())
    assert len(combined) == 1 and set(combined[0]) == {"image", "box", "label", "label_scores", "warnings"}
    assert combined[0]["warnings"] == []  # a scan like the training ones (shared.inference.domain)
    assert json.loads((predictions / "lung_ct_ts_000.json").read_text()) == combined[0]
    assert (predictions / "candidates.csv").read_text().startswith("seriesuid,coordX,coordY,coordZ,probability")
    box_map = nib.load(predictions / "lung_ct_ts_000_boxes.nii.gz")
    assert box_map.shape == nib.load(combined[0]["image"]).shape


def test_evaluate_overrides_train_and_writes_metrics(trained):
    _bundle("run", "--config_file", _configs(PLAIN, "train.json", "quick.json", "evaluate.json"), "--dataset_dir",
            str(trained / "data"), "--output_dir", str(trained / "out"), *_tiny("plain"), "--bootstrap", "10",
            cwd=trained / "elsewhere")
    evaluation = trained / "out" / "evaluation"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    # the test split, scored on the predictions the run wrote: every prediction and ground-truth box
    # counted, and MONAI's COCOMetric (the baseline's scorer) on them gives the same AP (after two
    # iterations often 0, which is why the counts are checked too)
    test = json.loads((trained / "data" / "datalist.json").read_text())["test"]
    predictions = json.loads((evaluation / "predictions" / "predictions.json").read_text())
    assert sorted(Path(entry["image"]).name for entry in predictions) == sorted(Path(e["image"]).name for e in test)
    assert metrics["count/images"] == len(test)
    assert metrics["count/ground_truth"] == sum(len(entry["box"]) for entry in test) > 0
    assert metrics["count/predictions"] == sum(len(entry["box"]) for entry in predictions)
    by_name = {Path(entry["image"]).name: entry for entry in predictions}
    ordered = [by_name[Path(entry["image"]).name] for entry in test]
    assert metrics["AP_IoU_0.10_MaxDet_100"] == pytest.approx(average_precision_at(ordered, test, 2), abs=1e-9)
    assert (evaluation / "report.md").is_file()


def test_metadata_and_network_in_out(trained):
    check_metadata(PLAIN / "metadata.json")
    _bundle("verify_net_in_out", "network_def", "--meta_file", str(PLAIN / "metadata.json"), "--config_file",
            _configs(PLAIN, "train.json", "quick.json"), *_tiny("plain"), "--network_def#dense_output", "True",
            cwd=trained / "elsewhere")


def test_exported_torchscript_gives_the_eager_detectors_boxes(trained):
    exported = trained / "model.ts"
    _bundle("ckpt_export", "network_def", "--filepath", str(exported), "--ckpt_file", str(trained / "out" / "model.pt"),
            "--meta_file", str(PLAIN / "metadata.json"), "--config_file", _configs(PLAIN, "train.json", "quick.json"),
            *_tiny("plain"), "--network_def#dense_output", "True", "--use_trace", "True",
            "--input_shape", "[1,1,32,32,32]", cwd=trained / "elsewhere")
    scripted = torch.jit.load(str(exported))
    network = load_weights(_network(), trained / "out" / "model.pt").eval()
    anchor_sizes = json.loads((trained / "out" / "model_plan.json").read_text())["anchor_sizes"]
    detector = RetinaUNetDetector(network, anchor_sizes=anchor_sizes, score_threshold=0.0).eval()
    torch.manual_seed(0)
    for shape in [(32, 32, 32), (40, 32, 48)]:  # the trace also holds at a size it did not see
        images = torch.randn(1, 1, *shape)
        with torch.no_grad():
            outputs = split_dense_output(scripted(images), shape, [4, 8], network.num_anchors, 2)
        from_export = detector.postprocessor(outputs["cls_logits"], outputs["box_regression"], shape)[0]
        eager = detector(images)[0]
        assert len(eager["boxes"]) > 0
        torch.testing.assert_close(from_export["boxes"], eager["boxes"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(from_export["scores"], eager["scores"], rtol=1e-4, atol=1e-5)
        assert torch.equal(from_export["labels"], eager["labels"])


def _write_scan(path: Path, array: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), path)
    return str(path)


def _datalist(data: Path, folder: Path, **splits) -> Path:
    """A copy of the generated datalist with absolute paths, its splits replaced by ``splits``."""
    datalist = json.loads((data / "datalist.json").read_text())
    for entry in datalist["training"]:
        entry.update({key: str(data / entry[key]) for key in ("image", "mask")})
    path = folder / "datalist.json"
    path.write_text(json.dumps({**datalist, **splits}))
    return path


@pytest.mark.parametrize("case", ["channels", "not_3d", "architecture", "empty_split"])
def test_bad_inference_input_fails_clearly_and_writes_nothing(trained, tmp_path, case):
    arguments = ["--model_dir", str(trained / "out"), *_tiny("plain"), "--prediction_dir", str(tmp_path / "pred")]
    rng = np.random.default_rng(0)
    if case == "channels":
        channel = _write_scan(tmp_path / "channel.nii.gz", rng.normal(size=(40, 40, 24)))
        scan = [channel, channel]  # one file per channel
        expected = "expects 1 channel(s), the scan has 2"
    elif case == "not_3d":
        scan = _write_scan(tmp_path / "flat.nii.gz", rng.normal(size=(40, 40)))
        expected = "flat.nii.gz: expected a 3-D scan"
    good = str(sorted((trained / "data" / "imagesTr").glob("lung_ct_ts_000*"))[0])
    if case in ("architecture", "empty_split"):
        scan = good
    if case == "architecture":
        torch.save(_network("resenc").state_dict(), tmp_path / "other.pt")
        arguments += ["--checkpoints", json.dumps([str(tmp_path / "other.pt")])]
        expected = "other.pt"
    # a good scan before the bad one: the bad one must fail before the good one's outputs are written
    entries = [{"image": scan}] if scan == good else [{"image": good}, {"image": scan}]
    datalist = _datalist(trained / "data", tmp_path, test=[] if case == "empty_split" else entries)
    if case == "empty_split":
        expected = "the 'test' split is empty"
    result = _bundle("run", "--config_file", _configs(PLAIN, "inference.json", "quick.json"), "--datalist",
                     str(datalist), *arguments, cwd=tmp_path, expect_failure=True)
    message = result.stdout + result.stderr
    assert expected in message, message[-3000:]
    if case == "architecture":
        assert "unexpected" in message and "missing" in message, message[-3000:]
    assert not list((tmp_path / "pred").glob("*.json"))


@pytest.mark.parametrize("case", ["patch_size", "empty_split"])
def test_bad_training_input_fails_clearly_and_writes_no_model(trained, tmp_path, case):
    datalist = trained / "data" / "datalist.json"
    arguments = list(TRAIN)
    if case == "patch_size":
        arguments[1] = "[36,36,36]"
        expected = "not divisible by the network's total stride 8"
    else:
        datalist = _datalist(trained / "data", tmp_path, validation=[])
        expected = "the 'validation' split is empty"
    result = _bundle("run", "--config_file", _configs(PLAIN, "train.json", "quick.json"), "--datalist", str(datalist),
                     "--output_dir", str(tmp_path / "out"), *_tiny("plain"), *arguments, cwd=tmp_path,
                     expect_failure=True)
    assert expected in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]
    assert not (tmp_path / "out" / "model.pt").exists()


def test_resenc_bundle_metadata_and_network_in_out(tmp_path):
    check_metadata(RESENC / "metadata.json")
    _bundle("verify_net_in_out", "network_def", "--meta_file", str(RESENC / "metadata.json"), "--config_file",
            _configs(RESENC, "train.json", "quick.json"), *_tiny("resenc"), "--network_def#dense_output", "True",
            cwd=tmp_path)


def test_resenc_bundle_fine_tunes_from_an_exported_encoder(trained, tmp_path):
    skipped = fine_tune_from_exported_encoder(RESENC, trained, tmp_path, *_tiny("resenc"), *TRAIN)
    assert skipped > 0
    load_weights(_network("resenc"), tmp_path / "out" / "model.pt")


def test_torchrun_two_processes_on_cpu(trained, tmp_path):
    # gloo on CPU: the two ranks sample disjoint batches, DDP averages their gradients, and each rank
    # validates its share of the cases (the metrics gather them)
    result = _bundle("--standalone", "--nproc_per_node", "2", "-m", "monai.bundle", "run", "--config_file",
            _configs(PLAIN, "train.json", "quick.json", "multi_gpu_train.json"), "--dataset_dir",
            str(trained / "data"), "--output_dir", str(tmp_path / "out"), *_tiny("plain"), *TRAIN,
            cwd=tmp_path, command=[sys.executable, "-m", "torch.distributed.run"])
    load_weights(_network(), tmp_path / "out" / "model.pt")
    assert "validation AP_IoU_0.10_MaxDet_100 =" in result.stdout + result.stderr, "the ranks validated together"
