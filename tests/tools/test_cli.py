import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests._cases import write_dataset
from shared.data.cache import list_cases
from shared.io.errors import InputError
from tools import convert
from tools._cli import run_cli
from tools.preprocess import main as preprocess_main

ROOT = Path(__file__).resolve().parents[2]


def test_run_cli_turns_input_error_into_exit_code_2(capsys, monkeypatch):
    def broken(path="x.json"):
        raise InputError(path, "nothing here")

    monkeypatch.setattr(sys, "argv", ["tool", "--path", "d.json"])
    with pytest.raises(SystemExit) as caught:
        run_cli(broken)
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip() == "error: d.json: nothing here"


@pytest.mark.slow  # a fresh interpreter importing torch and MONAI: ~5 s alone, ~20 s on a busy machine
def test_preprocess_tool_as_a_user_runs_it(tmp_path):
    """A real process: a missing datalist gives one plain line and exit code 2, no traceback."""
    result = subprocess.run([sys.executable, "-m", "tools.preprocess", "--datalist", str(tmp_path / "no.json"),
                             "--out", str(tmp_path / "cache")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no.json: datalist not found" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists()


def test_tool_functions(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1)
    preprocess_main(str(path), str(tmp_path / "cache"), spacing=(2, 2, 2), splits="training")
    assert list_cases(next((tmp_path / "cache").glob("*/preprocessing.json")).parent) == ["case0", "case1"]
    assert "wrote" in convert.datalist_to_nndetection(str(path), str(tmp_path / "Task"))
    summary = convert.nndetection_to_datalist(str(tmp_path / "Task"), str(tmp_path / "back.json"), validation_fraction=0.3)
    assert summary.endswith("2 training, 1 validation, 0 test")
    (tmp_path / "p.json").write_text('[{"image": "a.mhd", "box": [[1, 2, 3, 1, 1, 1]], "label": [0], "label_scores": [0.5]}]')
    convert.predictions_to_luna16(str(tmp_path / "p.json"), str(tmp_path / "c.csv"))
    assert (tmp_path / "c.csv").read_text().splitlines()[1] == "a,1.0000,2.0000,3.0000,0.500000"
    assert np.isfinite(float((tmp_path / "c.csv").read_text().split(",")[-1]))
