"""``shared.metrics.evaluation`` on small files: outputs written, rankings, bad input writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.io.errors import InputError
from shared.metrics.errors import EvaluationInputError
from shared.metrics.evaluation import compare_runs, evaluate_detections, evaluate_luna16_files

NAMES = ["benign", "malignant"]


def test_detections_writes_metrics_report_plots_and_records(evaluation_files, tmp_path, rng):
    predictions, datalist = evaluation_files(tmp_path, rng)
    metrics = evaluate_detections(str(predictions), str(datalist), str(tmp_path / "out"),
                                  class_names="benign,malignant", bootstrap=30, iou_thresholds=(0.1, 0.5))
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ["AP_IoU_0.10_MaxDet_100", "mAP_IoU_0.10_0.50_0.05_MaxDet_100", "AR_IoU_0.50_MaxDet_100",
                "mAR_IoU_0.10_0.50_0.05_MaxDet_100", "FROC_score_IoU_0.10", "FROC_sensitivity_IoU_0.10_FPPI_0.125",
                "FROC_sensitivity_IoU_0.10_FPPI_8", "malignant/AP_IoU_0.10_MaxDet_100", "AP_IoU_0.10_MaxDet_100_ci95"]:
        assert key in written, key
    low, high = written["AP_IoU_0.10_MaxDet_100_ci95"]
    assert low <= written["AP_IoU_0.10_MaxDet_100"] <= high
    # Boxes are the objects themselves: every object is found, the only errors are the noise boxes.
    assert metrics["AR_IoU_0.10_MaxDet_100"] < 1.0 and metrics["benign/AR_IoU_0.50_MaxDet_100"] > 0.5
    assert written["count/images_without_prediction_entry"] == 1
    assert "no prediction entry (counted as no detections): 1" in (tmp_path / "out" / "report.md").read_text()
    for name in ("froc.png", "pr_curves.png", "per_image.npz"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_compare_ranks_runs_on_the_same_images(evaluation_files, tmp_path, rng):
    good, datalist = evaluation_files(tmp_path, np.random.default_rng(1), name="good.json")
    bad, _ = evaluation_files(tmp_path, np.random.default_rng(1), scramble=6.0, name="bad.json")
    for name, predictions in (("good", good), ("bad", bad)):
        evaluate_detections(str(predictions), str(datalist), str(tmp_path / name), class_names=NAMES, bootstrap=0)
    content = compare_runs([str(tmp_path / "bad"), str(tmp_path / "good")], str(tmp_path / "cmp"), draws=25,
                               metric="AP_IoU_0.50_MaxDet_100")
    assert content["mean_rank"]["good"] < content["mean_rank"]["bad"]
    assert json.loads((tmp_path / "cmp" / "metrics.json").read_text())["mean_rank"] == content["mean_rank"]
    assert (tmp_path / "cmp" / "rank_histograms.png").stat().st_size > 0
    assert "| good |" in (tmp_path / "cmp" / "report.md").read_text()


def test_compare_refuses_different_test_sets(evaluation_files, tmp_path, rng):
    predictions, datalist = evaluation_files(tmp_path, rng)
    evaluate_detections(str(predictions), str(datalist), str(tmp_path / "one"), bootstrap=0)
    content = json.loads(datalist.read_text())
    content["test"] = content["test"][1:]
    smaller = tmp_path / "smaller.json"
    smaller.write_text(json.dumps(content))
    kept = [p for p in json.loads(predictions.read_text()) if p["image"] != "scans/0.nii.gz"]
    predictions.write_text(json.dumps(kept))
    evaluate_detections(str(predictions), str(smaller), str(tmp_path / "two"), bootstrap=0)
    with pytest.raises(EvaluationInputError, match="other images"):
        compare_runs([str(tmp_path / "one"), str(tmp_path / "two")], str(tmp_path / "cmp"), draws=5)
    assert not (tmp_path / "cmp").exists()


def test_bad_input_writes_nothing(evaluation_files, tmp_path, rng):
    predictions, datalist = evaluation_files(tmp_path, rng)
    content = json.loads(predictions.read_text())
    content[2]["label_scores"][0] = "high"
    predictions.write_text(json.dumps(content))
    with pytest.raises(EvaluationInputError, match="label_scores"):
        evaluate_detections(str(predictions), str(datalist), str(tmp_path / "out"), bootstrap=0)
    assert not (tmp_path / "out").exists()


def test_luna16_files_writes_cpm_and_refuses_nan(tmp_path):
    (tmp_path / "annotations.csv").write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\na,0,0,0,10\na,50,0,0,6\nb,0,0,0,8\n")
    (tmp_path / "excluded.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\nb,30,0,0,-1\n")
    (tmp_path / "candidates.csv").write_text(
        "seriesuid,coordX,coordY,coordZ,probability\na,1,0,0,0.9\na,2,0,0,0.8\na,100,0,0,0.7\nb,0,0,1,0.6\n"
        "b,31,0,0,0.95\nb,-40,0,0,0.5\n")
    (tmp_path / "series.csv").write_text("a\nb\n")
    metrics = evaluate_luna16_files(str(tmp_path / "candidates.csv"), str(tmp_path / "annotations.csv"),
                              str(tmp_path / "out"), excluded=str(tmp_path / "excluded.csv"),
                              seriesuids=str(tmp_path / "series.csv"))
    # Hits 0.9 and 0.6, false positives 0.7 and 0.5 (0.95 lies on an excluded finding), 3 nodules, 2 scans:
    # the same curve as the hand-computed case of test_luna16: CPM 11/21.
    assert metrics["CPM"] == pytest.approx(11 / 21)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["CPM"] == pytest.approx(11 / 21)
    assert (tmp_path / "out" / "froc.png").stat().st_size > 0 and "CPM" in (tmp_path / "out" / "report.md").read_text()
    (tmp_path / "candidates.csv").write_text("seriesuid,coordX,coordY,coordZ,probability\na,1,0,0,nan\n")
    with pytest.raises(EvaluationInputError, match="candidates.csv.*NaN"):
        evaluate_luna16_files(tmp_path / "candidates.csv", tmp_path / "annotations.csv", tmp_path / "o2")


def test_evaluation_input_error_is_the_project_input_error():
    error = EvaluationInputError("predictions.json: entry 2: field 'label_scores' must hold numbers.")
    assert isinstance(error, InputError) and isinstance(error, ValueError)
    assert str(error) == "predictions.json: entry 2: field 'label_scores' must hold numbers."
    assert str(EvaluationInputError("no list under 'test'.", source="d.json")) == "d.json: no list under 'test'."


def _luna16_files(tmp_path):
    (tmp_path / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\na,0,0,0,10\n")
    (tmp_path / "candidates.csv").write_text("seriesuid,coordX,coordY,coordZ,probability\na,1,0,0,0.9\n")
    return tmp_path / "candidates.csv", tmp_path / "annotations.csv"


def test_luna16_missing_seriesuids_and_rows_without_a_probability_are_clear_errors(tmp_path):
    candidates, annotations = _luna16_files(tmp_path)
    with pytest.raises(EvaluationInputError, match=r"missing.csv: file not found"):
        evaluate_luna16_files(candidates, annotations, tmp_path / "out", seriesuids=tmp_path / "missing.csv")
    candidates.write_text("seriesuid,coordX,coordY,coordZ,probability\na,1,0,0,0.9\na,5,0,0\n")
    with pytest.raises(EvaluationInputError, match=r"candidates.csv: line 3 \(seriesuid a\): no probability"):
        evaluate_luna16_files(candidates, annotations, tmp_path / "out")
    candidates.write_text("seriesuid,coordX,coordY,coordZ,probability\na,1,0,0,0.9\na,x,0,0,0.5\n")
    with pytest.raises(EvaluationInputError, match=r"candidates.csv: line 3 \(seriesuid a\): coordX 'x' is not a"):
        evaluate_luna16_files(candidates, annotations, tmp_path / "out")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(EvaluationInputError, match=r"folder.csv: is a folder"):
        evaluate_luna16_files(tmp_path / "folder.csv", annotations, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _no_work(*args, **kwargs):
    raise AssertionError("the evaluation started before its output folder was checked")


@pytest.mark.parametrize("command", ["detections", "luna16", "compare"])
def test_an_unwritable_output_folder_fails_before_any_work(evaluation_files, tmp_path, rng, monkeypatch, command):
    predictions, datalist = evaluation_files(tmp_path, rng)
    evaluate_detections(str(predictions), str(datalist), str(tmp_path / "run"), bootstrap=0)
    candidates, annotations = _luna16_files(tmp_path)
    for name in ("load_ground_truth", "match_detections", "bootstrap_metric_draws", "bootstrap_ranking",
                 "evaluate_luna16", "_read_findings", "_load_run"):
        monkeypatch.setattr(f"shared.metrics.evaluation.{name}", _no_work)
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "out"
    run = {"detections": lambda: evaluate_detections(predictions, datalist, out),
           "luna16": lambda: evaluate_luna16_files(candidates, annotations, out),
           "compare": lambda: compare_runs([tmp_path / "run", tmp_path / "run"], out, names="a,b")}[command]
    with pytest.raises(InputError, match=r"out: output folder cannot be created \(.*a_file is a file"):
        run()


def test_an_immutable_output_folder_is_refused(evaluation_files, tmp_path, rng):
    from tests.tools._unwritable import unwritable_folder

    predictions, datalist = evaluation_files(tmp_path, rng)
    with unwritable_folder(tmp_path / "locked") as locked:
        with pytest.raises(InputError, match="locked: output folder is not writable"):
            evaluate_detections(predictions, datalist, locked, bootstrap=10)


def test_images_without_predictions_are_counted(evaluation_files, tmp_path, rng):
    predictions, datalist = evaluation_files(tmp_path, rng)  # image 0 has no entry
    content = json.loads(predictions.read_text())
    content[0].update(box=[], label=[], label_scores=[])  # image 1: an entry without boxes
    predictions.write_text(json.dumps(content))
    written = evaluate_detections(predictions, datalist, tmp_path / "out", bootstrap=0)
    assert written["count/images_without_predictions"] == 2
    assert written["count/images_without_prediction_entry"] == 1
    assert "images without any prediction: 2" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("iou_thresholds", "0.1,abc", r"iou_thresholds: 'abc' is not a number"),
    ("iou_thresholds", (0.1, 1.5), r"iou_thresholds: 1.5 is not an IoU threshold in \(0, 1\]"),
    ("iou_range", (0.1, 0.5), r"iou_range: needs start,stop,step \(3 numbers\), got 2"),
    ("iou_range", (0.5, 0.1, 0.05), r"iou_range: needs 0 < start <= stop <= 1 and step > 0"),
    ("froc_iou", "x", r"froc_iou: 'x' is not a number"),
    ("froc_iou", 0.0, r"froc_iou: 0.0 is not an IoU threshold in \(0, 1\]"),
    ("max_detections", 0, r"max_detections: must be a whole number of at least 1, got 0"),
    ("bootstrap", -1, r"bootstrap: must be a whole number of at least 0, got -1"),
])
def test_bad_options_are_one_clear_error(evaluation_files, tmp_path, rng, option, value, message):
    predictions, datalist = evaluation_files(tmp_path, rng)
    with pytest.raises(EvaluationInputError, match=message):
        evaluate_detections(predictions, datalist, tmp_path / "out", **{option: value})
    assert not (tmp_path / "out").exists()


def test_compare_and_luna16_options_and_a_damaged_record(evaluation_files, tmp_path, rng):
    predictions, datalist = evaluation_files(tmp_path, rng)
    evaluate_detections(predictions, datalist, tmp_path / "run", bootstrap=0)
    with pytest.raises(EvaluationInputError, match=r"draws: must be a whole number of at least 1, got 0"):
        compare_runs([tmp_path / "run", tmp_path / "run"], tmp_path / "cmp", names="a,b", draws=0)
    candidates, annotations = _luna16_files(tmp_path)
    with pytest.raises(EvaluationInputError, match=r"max_marks: must be a whole number of at least 1"):
        evaluate_luna16_files(candidates, annotations, tmp_path / "l16", max_marks=0)
    (tmp_path / "run" / "per_image.npz").write_bytes(b"not a zip")
    with pytest.raises(EvaluationInputError, match=r"per_image.npz: not a record written by evaluate_detections"):
        compare_runs([tmp_path / "run", tmp_path / "run"], tmp_path / "cmp", names="a,b", draws=5)


def test_luna16_csvs_saved_by_a_spreadsheet_with_a_byte_order_mark_are_read(tmp_path):
    candidates, annotations = _luna16_files(tmp_path)
    annotations.write_bytes(b"\xef\xbb\xbf" + annotations.read_bytes())
    assert evaluate_luna16_files(candidates, annotations, tmp_path / "out")["CPM"] == 1.0
