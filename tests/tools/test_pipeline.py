"""The main job end to end at smoke-test size: every stage runs, marks itself done, and the report
compares the two fine-tuned models."""

import json

from shared.io.errors import InputError
from tools.pipeline import STAGES, main

TINY_DATA = {"counts": {"training": 3, "validation": 1, "test": 2, "unlabelled": 2}, "shape": (40, 40, 24),
             "previews": False}
TINY_ENCODER = {"name": "resenc", "preset": "tiny"}
TINY_PRETRAIN = {"encoder": TINY_ENCODER, "patch_size": [32, 32, 32], "iterations_per_epoch": 2, "epochs": 1}
TINY_FINETUNE = {"encoder": TINY_ENCODER, "decoder_channels": 16, "detection_strides": [4, 8],
                 "patch_size": [32, 32, 32], "iterations_per_epoch": 2, "epochs": 1, "warmup_iterations": 1,
                 "validate_every": 1}


def test_pipeline_runs_every_stage_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "run"
    main(str(out), data_overrides=TINY_DATA, pretrain_overrides=TINY_PRETRAIN, finetune_overrides=TINY_FINETUNE,
         bootstrap=20)
    assert f"report: {out / 'report' / 'report.md'}" in capsys.readouterr().out
    assert all((out / "stages" / f"{stage}.json").exists() for stage in STAGES)
    assert (out / "pretrain" / "encoder.pt").exists()
    report = (out / "report" / "report.md").read_text()
    assert "| scratch |" in report and "| mae |" in report and "mean rank" in report
    for variant in ("scratch", "mae"):
        metrics = json.loads((out / "finetune" / variant / "evaluation" / "metrics.json").read_text())
        assert "AP_IoU_0.10_MaxDet_100" in metrics

    # a second call skips what is done; --force re-runs only the stages asked for
    before = (out / "stages" / "data.json").stat().st_mtime_ns
    main(str(out), stages=["data", "report"], data_overrides=TINY_DATA, bootstrap=20)
    assert (out / "stages" / "data.json").stat().st_mtime_ns == before


def test_brain_task_passes_its_channels_and_classes_to_the_bundles(tmp_path, monkeypatch):
    import pytest

    import tools.pipeline as pipeline

    calls = []
    monkeypatch.setattr(pipeline, "run_bundle", lambda bundle, configs, **overrides: calls.append((bundle, overrides)))
    main(str(tmp_path / "run"), stages=["pretrain", "finetune"], task="brain_mri")
    pretrain, *finetunes = calls
    assert pretrain[1]["in_channels"] == 2 and "num_classes" not in pretrain[1]
    assert [call[1]["num_classes"] for call in finetunes] == [1, 1]
    assert all(call[1]["in_channels"] == 2 for call in finetunes)
    with pytest.raises(InputError, match="unknown task"):
        main(str(tmp_path / "other"), task="liver_ct")
