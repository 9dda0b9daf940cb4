"""The ``tools.evaluate`` fire entry functions on small files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tools import evaluate

def test_detections_prints_a_short_summary_and_returns_nothing(evaluation_files, tmp_path, rng, capsys):
    predictions, datalist = evaluation_files(tmp_path, rng)
    returned = evaluate.detections(str(predictions), str(datalist), str(tmp_path / "out"),
                                   class_names="benign,malignant", bootstrap=20)
    assert returned is None
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    low, high = written["AP_IoU_0.10_MaxDet_100_ci95"]
    value = f"{100 * written['AP_IoU_0.10_MaxDet_100']:.2f} [{100 * low:.2f}, {100 * high:.2f}]"
    assert f"AP_IoU_0.10_MaxDet_100: {value}" in printed
    assert f"FROC_score_IoU_0.10: {100 * written['FROC_score_IoU_0.10']:.2f}" in printed
    assert str(tmp_path / "out") in printed and len(printed.splitlines()) == 4
    # the fixture's image 0 has no entry in the predictions file
    assert "images without predictions: 1 of 12 (1 without an entry in the predictions file)" in printed


def test_compare_prints_models_best_first(evaluation_files, tmp_path, capsys):
    for name, seed in (("one", 1), ("two", 2)):
        predictions, datalist = evaluation_files(tmp_path, np.random.default_rng(1), scramble=seed * 3.0, name=f"{name}.json")
        evaluate.detections(str(predictions), str(datalist), str(tmp_path / name), bootstrap=0)
    capsys.readouterr()
    assert evaluate.compare([str(tmp_path / "two"), str(tmp_path / "one")], str(tmp_path / "cmp"), draws=10) is None
    ranks = json.loads((tmp_path / "cmp" / "metrics.json").read_text())["mean_rank"]
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(min(ranks, key=ranks.get) + ": mean rank")


def test_command_line_reports_input_errors_with_exit_status_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.json").write_text("[{")
    (tmp_path / "datalist.json").write_text(json.dumps({"test": [{"image": "a.nii.gz"}]}))
    monkeypatch.setattr("sys.argv", ["evaluate", "detections", "--predictions", str(tmp_path / "bad.json"),
                                     "--datalist", str(tmp_path / "datalist.json"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        evaluate.main()
    assert exited.value.code == 2
    assert "bad.json: malformed JSON" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _main(monkeypatch, capsys, *arguments) -> tuple[int, str]:
    """Run ``python -m tools.evaluate <arguments>``; return the exit status and what went to stderr."""
    monkeypatch.setattr("sys.argv", ["evaluate", *map(str, arguments)])
    with pytest.raises(SystemExit) as exited:
        evaluate.main()
    return exited.value.code, capsys.readouterr().err


def test_luna16_with_missing_seriesuids_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\na,0,0,0,10\n")
    (tmp_path / "candidates.csv").write_text("seriesuid,coordX,coordY,coordZ,probability\na,1,0,0,0.9\n")
    code, error = _main(monkeypatch, capsys, "luna16", "--candidates", tmp_path / "candidates.csv",
                        "--annotations", tmp_path / "annotations.csv", "--seriesuids", tmp_path / "nope.csv",
                        "--out", tmp_path / "out")
    assert code == 2 and error == f"error: {tmp_path / 'nope.csv'}: file not found.\n"


@pytest.mark.parametrize("kind", ["folder", "binary"])
def test_predictions_that_are_a_folder_or_binary_exit_2_with_one_line(evaluation_files, tmp_path, rng, monkeypatch,
                                                                      capsys, kind):
    _, datalist = evaluation_files(tmp_path, rng)
    predictions = tmp_path / "predictions_in"
    if kind == "folder":
        predictions.mkdir()
    else:
        predictions.write_bytes(bytes(range(128, 256)))
    code, error = _main(monkeypatch, capsys, "detections", "--predictions", predictions, "--datalist", datalist,
                        "--out", tmp_path / "out")
    assert code == 2 and len(error.splitlines()) == 1 and str(predictions) in error


def test_an_output_below_a_file_exits_2_before_the_work(evaluation_files, tmp_path, rng, monkeypatch, capsys):
    predictions, datalist = evaluation_files(tmp_path, rng)
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr("shared.metrics.evaluation.match_detections", None)  # any work would crash
    code, error = _main(monkeypatch, capsys, "detections", "--predictions", predictions, "--datalist", datalist,
                        "--out", tmp_path / "a_file" / "out", "--bootstrap", 1000)
    assert code == 2 and "output folder cannot be created" in error and len(error.splitlines()) == 1
