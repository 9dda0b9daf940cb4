"""The out-of-domain warning (shared.inference.domain): training records the training scans' fingerprint in
model_plan.json, inference compares each scan with it before normalisation and warns, in the log and in the
scan's prediction entry, when it is far outside; the thresholds at their boundaries; old plans still work.

Data: four quick-preset lung CT scans (the embedded generator) train the plan; an unseen lung scan is in
domain, the T1c channel of a brain MRI scan, a bone-heavy head-CT-like phantom and a lung scan relabelled
with three times its spacing are not.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.boxes.convention import boxes_from_instance_mask, boxes_voxel_to_world
from shared.data.plan import plan_dataset
from shared.data.synthetic import make_case
from shared.data.transforms_chains import preprocessing_chain
from shared.engines.detection_setup import check_inference_preprocessing, prepare_detection_data, read_model_plan
from shared.engines.inference import PredictionWriter, ScanEvaluator, ScanPredictor, single_case
from shared.inference.domain import (CHECKED_PERCENTILES, CheckTrainingDomaind, channel_statistics, check_scan,
                                     domain_problems, sampling_step, summarize_scan)
from shared.io.datalist import write_datalist
from shared.io.errors import InputError
from shared.io.images import save_nifti

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "retina_unet_detection" / "configs"
LOGGER = "shared.inference.domain"


def _save_case(folder: Path, name: str, case, channel: int = 0) -> dict:
    path = folder / f"{name}.nii.gz"
    save_nifti(path, case.image[channel], case.affine)
    boxes, _ = boxes_from_instance_mask(case.instances)
    return {"image": str(path), "box": boxes_voxel_to_world(boxes, case.affine).tolist(),
            "label": [int(label) for label in case.labels]}


def _head_ct(folder: Path) -> str:
    """A head-CT-like phantom: air, an 8 mm skull of cortical bone, brain; 180 × 220 × 180 mm at 2 mm."""
    shape, spacing = np.array((90, 110, 90)), 2.0
    axes = [(np.arange(size) - (size - 1) / 2) * spacing for size in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    radius = np.sqrt((x / 80) ** 2 + (y / 100) ** 2 + (z / 82) ** 2)  # 1 at the skull's outer surface
    rng = np.random.default_rng(0)
    hu = np.where(radius < 1 - 8 / 90, 35.0, np.where(radius < 1, 1200.0, -1000.0)) + rng.normal(0, 10, shape)
    path = folder / "head.nii.gz"
    save_nifti(path, hu.astype(np.int16), np.diag([spacing, spacing, spacing, 1.0]))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A lung-trained model folder (model_plan.json only: the check needs no weights) and the scans to check."""
    root = tmp_path_factory.mktemp("domain")
    raw = root / "raw"
    raw.mkdir()
    training = [_save_case(raw, f"lung_tr{index}", make_case("lung_ct", "training", index)) for index in range(4)]
    validation = [_save_case(raw, "lung_va0", make_case("lung_ct", "validation", 0))]
    datalist = raw / "datalist.json"
    write_datalist(datalist, {"training": training, "validation": validation, "classes": ["benign", "malignant"]})
    plan = plan_dataset(datalist, root / "cache", spacing="median")
    prepare_detection_data(datalist, root / "cache", root / "model", preprocessing=preprocessing_chain(plan), plan=plan,
                           in_channels=1, num_classes=2, patch_size=[32, 32, 16], detection_strides=[4, 8])
    lung = make_case("lung_ct", "test", 0)
    stretched = np.diag([3.0, 3.0, 3.0, 1.0]) @ lung.affine  # the same voxels, three times the spacing
    scans = {
        "lung": _save_case(raw, "lung_ts0", lung)["image"],
        "brain": _save_case(raw, "brain_t1c", make_case("brain_mri", "test", 0), channel=0)["image"],
        "head": _head_ct(raw),
    }
    save_nifti(raw / "lung_stretched.nii.gz", lung.image[0], stretched)
    scans["stretched"] = str(raw / "lung_stretched.nii.gz")
    return {"root": root, "model": root / "model", "scans": scans, "plan": plan}


def _fingerprint(**channel) -> dict:
    """A hand-made fingerprint: one CT channel, spacing 1..2 mm, extent 100..200 mm per axis."""
    trained = {"modality": "CT", "compared": [[-900.0, -800.0], [-500.0, -100.0], [100.0, 300.0]], "scale": 1000.0}
    return {"spacing": {"min": [1.0] * 3, "max": [2.0] * 3}, "extent_mm": {"min": [100.0] * 3, "max": [200.0] * 3},
            "channels": [{**trained, **channel}]}


def _summary(compared=(-850.0, -300.0, 200.0), spacing=(1.5,) * 3, extent=(150.0,) * 3) -> dict:
    return {"spacing": list(spacing), "extent_mm": list(extent), "channels": [{"compared": list(compared)}]}


def test_channel_statistics_against_numpy_percentiles():
    values = np.arange(1001, dtype=np.float64)  # q5 = 50, q50 = 500, q95 = 950 exactly
    ct = channel_statistics(values, "CT")
    assert ct["percentiles"] == pytest.approx([5.0, 50.0, 500.0, 950.0, 995.0])
    assert ct["compared"] == pytest.approx([50.0, 500.0, 950.0]) and ct["scale"] == pytest.approx(900.0)
    assert ct["mean"] == pytest.approx(500.0) and ct["std"] == pytest.approx(values.std())
    # MRI: the shape only, (q - q50) / (q95 - q5), the same for any scanner scale
    assert channel_statistics(values, "MRI")["compared"] == pytest.approx([-0.5, 0.0, 0.5])
    assert channel_statistics(7.0 * values + 3.0, "MRI")["compared"] == pytest.approx([-0.5, 0.0, 0.5])


def test_the_subsample_keeps_a_bounded_count_and_the_percentiles():
    assert sampling_step((64, 64, 64)) == 1 and sampling_step((65, 64, 64)) == 2
    assert sampling_step((512, 512, 300)) == 7  # a full chest CT: 5.6 M voxels, 1/343 of them
    rng = np.random.default_rng(0)
    array = rng.normal(0.0, 100.0, size=(1, 130, 120, 110)).astype(np.float32)
    summary = summarize_scan(array, np.diag([0.5, 0.5, 2.0, 1.0]), ["CT"])
    assert summary["spacing"] == pytest.approx([0.5, 0.5, 2.0]) and summary["extent_mm"] == pytest.approx([65, 60, 220])
    full = np.percentile(array, CHECKED_PERCENTILES)
    assert summary["channels"][0]["compared"] == pytest.approx(full, abs=3.0)  # 3 % of a standard deviation


def test_intensity_threshold_is_the_training_range_widened_by_the_margin():
    fingerprint = _fingerprint()
    assert domain_problems(_summary(), fingerprint) == []
    # the 95th percentile's range [100, 300] widened by 0.25 × 1000 on each side: [-150, 550]
    assert domain_problems(_summary(compared=(-850.0, -300.0, 549.0)), fingerprint) == []
    assert domain_problems(_summary(compared=(-850.0, -300.0, -149.0)), fingerprint) == []
    [problem] = domain_problems(_summary(compared=(-850.0, -300.0, 551.0)), fingerprint)
    assert problem == "channel 0 (CT) 95th percentile 551 outside the training's [100, 300] ± 250"
    assert len(domain_problems(_summary(compared=(-600.0, 200.0, 551.0)), fingerprint)) == 2  # q5 and q95
    assert domain_problems(_summary(compared=(-850.0, -300.0, 551.0)), fingerprint, margin=0.3) == []


def test_geometry_threshold_is_half_the_minimum_to_twice_the_maximum():
    fingerprint = _fingerprint()
    assert domain_problems(_summary(spacing=(0.5, 1.0, 4.0), extent=(50.0, 100.0, 400.0)), fingerprint) == []
    [problem] = domain_problems(_summary(spacing=(0.49, 1.0, 1.0)), fingerprint)
    assert problem == "spacing [0.49, 1, 1] mm outside the training's [0.5, 0.5, 0.5]..[4, 4, 4] (its range widened 2×)"
    [problem] = domain_problems(_summary(extent=(150.0, 150.0, 401.0)), fingerprint)
    assert problem.startswith("extent [150, 150, 401] mm outside the training's [50, 50, 50]..[400, 400, 400]")
    assert domain_problems(_summary(extent=(150.0, 150.0, 401.0)), fingerprint, geometry_factor=3.0) == []


def test_an_mri_channel_is_compared_by_shape_not_by_scale():
    fingerprint = _fingerprint(modality="MRI", compared=[[-0.5, -0.4], [0.0, 0.0], [0.5, 0.6]], scale=1.0)
    values = np.arange(1001, dtype=np.float64).reshape(1, 11, 91, 1).repeat(2, axis=3)
    values = np.tile(values, (1, 10, 1, 60))  # (1, 110, 91, 120) at 1.5 mm: inside the geometry ranges
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    assert check_scan(values, affine, fingerprint) == []
    assert check_scan(values * 50.0, affine, fingerprint) == []  # another scanner's scale: fine
    skewed = np.where(values > 100, 100.0, values)  # most voxels at one value: the shape changes
    problems = check_scan(skewed, affine, fingerprint)  # q5, q50, q95 = 50, 100, 100: shape -1, 0, 0
    assert problems == ["channel 0 (MRI) (q5 - q50) / (q95 - q5) -1 outside the training's [-0.5, -0.4] ± 0.25",
                        "channel 0 (MRI) (q95 - q50) / (q95 - q5) 0 outside the training's [0.5, 0.6] ± 0.25"]


def test_a_scan_with_another_channel_count_is_refused():
    with pytest.raises(InputError, match=r"two.nii.gz: the model expects 1 channel\(s\), the scan has 2"):
        check_scan(np.zeros((2, 8, 8, 8)), np.eye(4), _fingerprint(), source="two.nii.gz")


def test_training_records_the_fingerprint_and_an_unseen_lung_scan_passes(trained, caplog):
    domain = read_model_plan(trained["model"])["domain"]
    assert domain["num_scans"] == 4 and domain["intensity_scans"] == 4
    assert domain["spacing"]["min"] == pytest.approx([1.4, 1.4, 2.5]) and domain["extent_mm"]["max"] == \
        pytest.approx([134.4, 134.4, 140.0])
    [channel] = domain["channels"]
    assert channel["modality"] == "CT" and 800 < channel["scale"] < 1500  # air to soft tissue and bone, in HU
    low, high = channel["compared"][0]  # the 5th percentile: lung parenchyma and air
    assert -1000 < low <= high < -700
    from shared.io.images import load_volume

    volume = load_volume(trained["scans"]["lung"])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert check_scan(volume.array, volume.affine, domain, source=trained["scans"]["lung"]) == []
    assert not caplog.records


def _run_inference_json(model_dir: Path, images: list[str], out: Path):
    """inference.json's own dataset, preprocessing and postprocessing, a stub detector (one box per scan)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["model_dir"], parser["images"] = str(model_dir), images
    check_inference_preprocessing(model_dir, parser.get_parsed_content("preprocessing"))  # the check is not listed
    loader = torch.utils.data.DataLoader(parser.get_parsed_content("dataset"), batch_size=1, collate_fn=single_case)

    def inferer(image, network):
        return {"boxes": torch.tensor([[1.0, 2.0, 3.0, 5.0, 6.0, 7.0]]), "scores": torch.tensor([0.9]),
                "labels": torch.tensor([0])}

    ScanEvaluator("cpu", loader, torch.nn.Conv3d(1, 1, 1), inferer=inferer,
                  postprocessing=parser.get_parsed_content("postprocessing"),
                  val_handlers=[PredictionWriter(out)]).run()
    return json.loads((out / "predictions.json").read_text())


def test_inference_json_warns_on_mri_head_ct_and_stretched_scans_in_the_log_and_the_json(trained, caplog):
    from shared.metrics.evaluation import evaluate_detections

    names = ["lung", "brain", "head", "stretched"]
    images = [trained["scans"][name] for name in names]
    out = trained["root"] / "predictions"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        written = _run_inference_json(trained["model"], images, out)
    warnings = {name: entry["warnings"] for name, entry in zip(names, written)}
    assert warnings["lung"] == []
    assert any("channel 0 (CT) 5th percentile" in problem for problem in warnings["brain"])  # MRI: no air at -1000
    assert any("channel 0 (CT) 95th percentile" in problem for problem in warnings["head"])  # the skull
    assert [problem.split(" ")[0] for problem in warnings["stretched"]] == ["spacing", "extent"]
    # one log line per scan outside, naming the file and what is off
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3
    for name, line in zip(names[1:], lines):
        assert line.startswith(f"{trained['scans'][name]}: unlike the model's training scans")
        assert all(problem in line for problem in warnings[name])
    # the per-scan file holds the same entry; predictions.json stays readable by tools.evaluate
    assert json.loads((out / "brain_t1c.json").read_text()) == written[1]
    datalist = trained["root"] / "test.json"
    write_datalist(datalist, {"test": [{"image": image, "box": [], "label": []} for image in images],
                              "classes": ["benign", "malignant"]})
    metrics = evaluate_detections(out / "predictions.json", datalist, trained["root"] / "evaluation", bootstrap=0)
    assert metrics["count/images"] == 4


def test_a_model_plan_without_a_fingerprint_runs_unchecked_with_one_info_line(trained, tmp_path, caplog):
    plan = read_model_plan(trained["model"])
    del plan["domain"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model_plan.json").write_text(json.dumps(plan))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        written = _run_inference_json(tmp_path / "old", [trained["scans"]["head"]], tmp_path / "out")
    assert "warnings" not in written[0] and written[0]["label_scores"] == pytest.approx([0.9])
    [record] = [record for record in caplog.records if record.name == LOGGER]
    assert record.levelno == logging.INFO and "no training-domain fingerprint" in record.getMessage()
    assert CheckTrainingDomaind(None)({"image": np.zeros((1, 4, 4, 4))}).keys() == {"image"}


def test_scan_predictor_adds_the_warnings_to_its_entries(trained):
    domain = read_model_plan(trained["model"])["domain"]
    predictor = ScanPredictor([], trained["plan"], patch_size=[32, 32, 16], domain=domain)
    predictor.predict_volume = lambda volume: {"boxes": np.zeros((0, 6)), "labels": np.zeros(0, np.int64),
                                               "scores": np.zeros(0)}
    assert predictor.predict_scan(trained["scans"]["lung"])["warnings"] == []
    assert predictor.predict_scan(trained["scans"]["head"])["warnings"]
    unchecked = ScanPredictor([], trained["plan"], patch_size=[32, 32, 16])
    unchecked.predict_volume = predictor.predict_volume
    assert "warnings" not in unchecked.predict_scan(trained["scans"]["head"])


def test_the_fingerprint_is_kept_in_the_cache_and_redone_when_the_datalist_changes(trained, tmp_path, monkeypatch):
    import shared.inference.domain as domain

    datalist = trained["root"] / "raw" / "datalist.json"
    first = domain.fingerprint_datalist(datalist, ["CT"], cache_dir=tmp_path)
    assert first == read_model_plan(trained["model"])["domain"]
    assert json.loads((tmp_path / "domain.json").read_text())["fingerprint"] == first

    def refuse(*args, **kwargs):
        raise AssertionError("read the scans again")

    monkeypatch.setattr(domain, "fingerprint_training_scans", refuse)
    assert domain.fingerprint_datalist(datalist, ["CT"], cache_dir=tmp_path) == first  # no scan read
    content = json.loads(datalist.read_text())
    content["training"] = content["training"][:2]
    shorter = datalist.with_name("shorter.json")  # beside the scans: the datalist names them relative to it
    shorter.write_text(json.dumps(content))
    with pytest.raises(AssertionError, match="read the scans again"):
        domain.fingerprint_datalist(shorter, ["CT"], cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="read the scans again"):
        domain.fingerprint_datalist(datalist, ["CT"], cache_dir=tmp_path, max_scans=2)
