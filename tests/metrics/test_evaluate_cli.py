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
    assert str(tmp_path / "out") in printed and len(printed.splitlines()) == 3


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
    (tmp_path / "datalist.json").write_text(json.dumps({"test": []}))
    monkeypatch.setattr("sys.argv", ["evaluate", "detections", "--predictions", str(tmp_path / "bad.json"),
                                     "--datalist", str(tmp_path / "datalist.json"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        evaluate.main()
    assert exited.value.code == 2
    assert "bad.json: malformed JSON" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
