"""Every tool refuses an output it cannot write before it starts working, and every tool's bad input is
one plain line with exit status 2 (tools.evaluate has its own tests)."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")

import tools.baseline
import tools.convert
import tools.import_encoder
import tools.make_dataset
import tools.pipeline
import tools.preprocess
import tools.sweep_postprocessing
from shared.io.errors import InputError
from tests.tools._unwritable import below_a_file, unwritable_folder


def _work_started(*args, **kwargs):
    raise AssertionError("the tool started working before it checked its output")


# (module, the function that does the work, a call of the tool with output location OUT)
TOOLS = {
    "preprocess": (tools.preprocess, "preprocess_datalist", lambda out: tools.preprocess.main("d.json", str(out / "cache"))),
    "baseline": (tools.baseline, "read_split", lambda out: tools.baseline.main("d.json", str(out / "p.json"))),
    "nndetection_to_datalist": (tools.convert, "import_nndetection",
                                lambda out: tools.convert.nndetection_to_datalist("raw", str(out / "d.json"))),
    "datalist_to_nndetection": (tools.convert, "export_nndetection",
                                lambda out: tools.convert.datalist_to_nndetection("d.json", str(out / "Task"))),
    "luna16_to_datalist": (tools.convert, "import_luna16",
                           lambda out: tools.convert.luna16_to_datalist("a.csv", "scans", str(out / "d.json"))),
    "predictions_to_luna16": (tools.convert, "export_luna16_candidates",
                              lambda out: tools.convert.predictions_to_luna16("p.json", str(out / "c.csv"))),
    "import_encoder": (tools.import_encoder, "load_pretrained",
                       lambda out: tools.import_encoder.import_encoder("c.pth", str(out / "encoder"))),
    "make_dataset": (tools.make_dataset, "make_dataset", lambda out: tools.make_dataset.main("lung_ct", str(out / "d"))),
    "sweep_postprocessing": (tools.sweep_postprocessing, "_bundle_parts",
                             lambda out: tools.sweep_postprocessing.sweep("bundle", str(out))),
    "pipeline": (tools.pipeline, "make_data", lambda out: tools.pipeline.main(str(out / "run"), stages=["data"])),
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_output_below_a_file_is_refused_before_any_work(tool, tmp_path, monkeypatch):
    module, work, call = TOOLS[tool]
    monkeypatch.setattr(module, work, _work_started)
    if tool == "pipeline":
        monkeypatch.setitem(module.STAGE_FUNCTIONS, "data", _work_started)
    with pytest.raises(InputError, match="a_file is a file"):
        call(below_a_file(tmp_path))


@pytest.mark.parametrize("tool", ["preprocess", "baseline", "import_encoder", "sweep_postprocessing"])
def test_unwritable_output_folder_is_refused_before_any_work(tool, tmp_path, monkeypatch):
    module, work, call = TOOLS[tool]
    monkeypatch.setattr(module, work, _work_started)
    with unwritable_folder(tmp_path / "locked") as locked:
        with pytest.raises(InputError, match="not writable"):
            call(locked)


def _run_as_command(module: str, arguments: list[str], monkeypatch) -> int:
    """``python -m module arguments`` in this process (a fresh interpreter importing torch takes seconds)."""
    monkeypatch.setattr(sys, "argv", [module, *arguments])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    return exited.value.code


@pytest.mark.parametrize("module, arguments, expected", [
    ("tools.baseline", ["--datalist", "{tmp}/no.json", "--out", "{tmp}/p.json"], "no.json: datalist not found"),
    ("tools.make_dataset", ["lung_ct", "--out", "{tmp}/d", "--shape", "[4,4,4]"], "--shape must be three sizes"),
    ("tools.pipeline", ["--out", "{tmp}/run", "--stages", "[train]"], "unknown stage(s) ['train']"),
    ("tools.pipeline", ["--out", "{tmp}/run", "--task", "liver_ct"], "unknown task 'liver_ct'"),
    ("tools.import_encoder", ["--checkpoint", "{tmp}/c.pth", "--out", "{tmp}/e"], "c.pth: no such file"),
])
def test_bad_input_exits_2_with_one_line(module, arguments, expected, tmp_path, monkeypatch, capsys):
    code = _run_as_command(module, [argument.format(tmp=tmp_path) for argument in arguments], monkeypatch)
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error: ") and expected in error and "\n" not in error, error


def test_pipeline_stops_with_the_exit_status_of_a_failed_bundle(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tools.pipeline.subprocess, "run",
                        lambda command, **kwargs: subprocess.CompletedProcess(command, 2))
    with pytest.raises(SystemExit) as exited:
        tools.pipeline.main(str(tmp_path / "run"), stages=["pretrain"], encoder="pretrain")
    assert exited.value.code == 2
    assert "resenc_mae_pretrain failed (exit status 2)" in caplog.text
    assert not (tmp_path / "run" / "stages" / "pretrain.json").exists()
