"""The main job end to end at smoke-test size: every stage runs, marks itself done, and the report
compares the two fine-tuned models with the classical baseline."""

import json

import pytest

import tools.pipeline as pipeline
from shared.io.errors import InputError
from tools.pipeline import STAGES, main

SIDE_BY_SIDE = pipeline.side_by_side

TINY_DATA = {"counts": {"training": 3, "validation": 1, "test": 2, "unlabelled": 2}, "shape": (40, 40, 24),
             "previews": False}
TINY_ENCODER = {"name": "resenc", "preset": "tiny"}
TINY_PRETRAIN = {"encoder": TINY_ENCODER, "patch_size": [32, 32, 32], "iterations_per_epoch": 2, "epochs": 1}
TINY_FINETUNE = {"encoder": TINY_ENCODER, "decoder_channels": 16, "detection_strides": [4, 8],
                 "patch_size": [32, 32, 32], "iterations_per_epoch": 2, "epochs": 2, "lr_warmup_iterations": 1,
                 "validate_every": 2}


@pytest.fixture(autouse=True)
def one_run_at_a_time(monkeypatch):
    """The stand-ins for the bundles below note their calls in order: the stages run one bundle at a time
    (the tests that run bundles side by side say so)."""
    monkeypatch.setattr(pipeline, "side_by_side", lambda runs: 1)


def test_pipeline_runs_every_stage_and_writes_the_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "side_by_side", SIDE_BY_SIDE)  # two cores here: scratch beside pretrained
    out = tmp_path / "run"
    main(str(out), encoder="pretrain", data_overrides=TINY_DATA, pretrain_overrides=TINY_PRETRAIN,
         finetune_overrides=TINY_FINETUNE, bootstrap=20)
    assert f"report: {out / 'report' / 'report.md'}" in capsys.readouterr().out
    assert all((out / "stages" / f"{stage}.json").exists() for stage in STAGES)
    assert (out / "pretrain" / "encoder.pt").exists()
    report = (out / "report" / "report.md").read_text()
    assert all(f"| {name} |" in report for name in ("scratch", "pretrained", "LoG baseline")) and "mean rank" in report
    assert "classical baseline" in report and "Both fine-tunings: 4 iterations" in report
    assert "the pre-trained one spends the first 2 of them with its encoder frozen" in report
    for variant in ("scratch", "pretrained"):
        metrics = json.loads((out / "finetune" / variant / "evaluation" / "metrics.json").read_text())
        assert "AP_IoU_0.10_MaxDet_100" in metrics

    # a second call skips what is done; --force re-runs only the stages asked for
    before = (out / "stages" / "data.json").stat().st_mtime_ns
    main(str(out), stages=["data", "report"], data_overrides=TINY_DATA, bootstrap=20)
    assert (out / "stages" / "data.json").stat().st_mtime_ns == before


def test_brain_task_passes_its_channels_and_classes_to_the_bundles(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "run_bundle", lambda bundle, configs, **overrides: calls.append((bundle, overrides)))
    main(str(tmp_path / "run"), stages=["pretrain", "finetune"], task="brain_mri")
    pretrain, *finetunes = calls
    assert pretrain[1]["in_channels"] == 2 and "num_classes" not in pretrain[1]
    assert [call[1]["num_classes"] for call in finetunes] == [1, 1]
    assert all(call[1]["in_channels"] == 2 for call in finetunes)
    with pytest.raises(InputError, match="unknown task"):
        main(str(tmp_path / "other"), task="liver_ct")


def fake_training(calls, fail_on=None):
    """A stand-in for the bundles: notes where it trains and what it found there, writes a model."""
    from pathlib import Path

    def run_bundle(bundle, configs, **overrides):
        output = Path(overrides["output_dir"])
        calls.append((output, sorted(path.name for path in output.rglob("*")) if output.exists() else []))
        if fail_on and output.name == fail_on:
            raise SystemExit(1)
        output.mkdir(parents=True, exist_ok=True)
        (output / "model.pt").write_text(f"call {len(calls)}")
    return run_bundle


def test_force_trains_a_stage_from_nothing_and_replaces_its_outputs_once_complete(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = []
    monkeypatch.setattr(pipeline, "run_bundle", fake_training(calls))
    main(str(out), stages=["finetune"], encoder="pretrain")
    (out / "finetune" / "pretrained" / "checkpoints").mkdir()
    (out / "finetune" / "pretrained" / "checkpoints" / "last_checkpoint_6.pt").write_text("a finished run's")
    old_models = {variant: (out / "finetune" / variant / "model.pt").read_text() for variant in ("scratch", "pretrained")}

    calls.clear()

    def check_old_outputs_stay(bundle, configs, **overrides):
        assert {variant: (out / "finetune" / variant / "model.pt").read_text() for variant in old_models} == old_models
        fake(bundle, configs, **overrides)

    fake = fake_training(calls)
    monkeypatch.setattr(pipeline, "run_bundle", check_old_outputs_stay)
    main(str(out), stages=["finetune"], force=True, encoder="pretrain")
    assert [(output.parent.name, found) for output, found in calls] == [(".finetune.fresh", [])] * 2
    assert (out / "finetune" / "scratch" / "model.pt").read_text() == "call 1"
    assert (out / "finetune" / "pretrained" / "model.pt").read_text() == "call 2"
    assert not (out / "finetune" / "pretrained" / "checkpoints").exists()
    assert sorted(path.name for path in out.iterdir()) == ["finetune", "stages"]


def test_a_forced_stage_that_fails_leaves_the_old_outputs(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = []
    monkeypatch.setattr(pipeline, "run_bundle", fake_training(calls))
    main(str(out), stages=["finetune"], encoder="pretrain")
    marker = (out / "stages" / "finetune.json").read_text()
    monkeypatch.setattr(pipeline, "run_bundle", fake_training(calls, fail_on="pretrained"))
    with pytest.raises(SystemExit):
        main(str(out), stages=["finetune"], force=True, encoder="pretrain")
    assert (out / "finetune" / "scratch" / "model.pt").read_text() == "call 1"
    assert (out / "finetune" / "pretrained" / "model.pt").read_text() == "call 2"
    assert (out / "stages" / "finetune.json").read_text() == marker

    main(str(out), stages=["finetune"], encoder="pretrain")  # done before: skipped; the unfinished fresh folder is removed
    assert len(calls) == 4 and sorted(path.name for path in out.iterdir()) == ["finetune", "stages"]


def test_a_forced_stage_for_fewer_methods_keeps_the_other_methods_runs(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = []
    monkeypatch.setattr(pipeline, "run_bundle", fake_training(calls))
    main(str(out), stages=["pretrain", "finetune"], methods=["mae", "spark"])
    (out / "finetune" / "train_logs").mkdir()
    (out / "finetune" / "train_logs" / "spark.log").write_text("the old run's log")
    before = {path: path.read_text() for path in out.rglob("model.pt")}
    assert len(before) == 5  # two encoders' runs, three fine-tuned models

    calls.clear()
    main(str(out), stages=["pretrain", "finetune"], methods=["spark"], force=True)
    assert [(output.parent.name, output.name) for output, _ in calls] == [
        (".pretrain.fresh", "spark"), (".finetune.fresh", "scratch"), (".finetune.fresh", "spark")]
    for path, text in before.items():  # the runs made again are new, mae's encoder and model are kept
        made_again = path.parent.name in ("spark", "scratch")
        assert (path.read_text() != text) == made_again, path
    assert not (out / "finetune" / "train_logs").exists()  # logs of the old runs go with them
    assert sorted(path.name for path in out.iterdir()) == ["finetune", "pretrain", "stages"]


def test_outputs_set_aside_by_a_killed_swap_are_put_back(tmp_path):
    out = tmp_path / "run"
    (out / ".finetune.replaced" / "pretrained").mkdir(parents=True)
    (out / ".finetune.replaced" / "pretrained" / "model.pt").write_text("old")
    (out / ".finetune.fresh" / "pretrained").mkdir(parents=True)
    main(str(out), stages=[])
    assert (out / "finetune" / "pretrained" / "model.pt").read_text() == "old"
    assert sorted(path.name for path in out.iterdir()) == ["finetune"]


def test_a_stage_that_runs_again_takes_the_done_mark_off_the_later_stages(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(pipeline, "run_bundle", fake_training([]))
    main(str(out), stages=["finetune"], encoder="pretrain")
    for later in ("evaluate", "report"):
        (out / "stages" / f"{later}.json").write_text("{}")
    (out / "stages" / "data.json").write_text("{}")
    main(str(out), stages=["finetune"], force=True, encoder="pretrain")
    assert sorted(path.name for path in (out / "stages").iterdir()) == ["data.json", "finetune.json"]


def test_the_pretrained_side_starts_from_the_shipped_given_or_pretrained_encoder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "run_bundle", lambda bundle, configs, **overrides: calls.append((bundle, overrides)))
    manifest = tmp_path / "imported" / "encoder.json"
    manifest.parent.mkdir()
    manifest.write_text("{}")
    main(str(tmp_path / "given"), stages=["pretrain", "finetune"], encoder=str(manifest))
    assert [call[0] for call in calls] == [pipeline.DETECTOR_BUNDLE] * 2  # no pre-training
    assert [call[1]["pretrained_encoder"] for call in calls] == [None, str(manifest.resolve())]
    assert calls[0][1]["num_classes"] == 1  # lung_nodules: one class

    calls.clear()
    main(str(tmp_path / "new"), stages=["pretrain", "finetune"], encoder="pretrain")
    assert [call[0] for call in calls] == [pipeline.PRETRAIN_BUNDLE] + [pipeline.DETECTOR_BUNDLE] * 2
    assert calls[2][1]["pretrained_encoder"] == str(tmp_path / "new" / "pretrain" / "encoder.json")

    with pytest.raises(InputError, match="no such encoder manifest"):
        main(str(tmp_path / "missing"), stages=["finetune"], encoder=str(tmp_path / "nothing.json"))


def test_methods_pretrain_an_encoder_each_and_fine_tune_a_model_from_each(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "run_bundle", lambda bundle, configs, **overrides: calls.append((bundle, overrides)))
    out = (tmp_path / "run").resolve()
    main(str(out), stages=["pretrain", "finetune", "evaluate"], methods=["spark", "voco"])
    assert [call[0] for call in calls] == (["resenc_spark_pretrain", "resenc_voco_pretrain"]
                                          + [pipeline.DETECTOR_BUNDLE] * 6)
    spark, voco = calls[0][1], calls[1][1]
    assert [spark["output_dir"], voco["output_dir"]] == [out / "pretrain" / "spark", out / "pretrain" / "voco"]
    assert spark["patch_size"] == [48, 48, 48] and "patch_size" not in voco  # VoCo samples crops, not patches
    finetunes, evaluations = calls[2:5], calls[5:]
    for runs in (finetunes, evaluations):
        assert [call[1]["output_dir"].name for call in runs] == ["scratch", "spark", "voco"]
    assert [call[1]["pretrained_encoder"] for call in finetunes] == [
        None, str(out / "pretrain" / "spark" / "encoder.json"), str(out / "pretrain" / "voco" / "encoder.json")]

    with pytest.raises(InputError, match="unknown pre-training method"):
        main(str(tmp_path / "other"), methods=["simclr"])
    with pytest.raises(InputError, match="exclude each other"):
        main(str(tmp_path / "other"), methods=["mae"], encoder="pretrain")
    with pytest.raises(InputError, match="takes method names"):
        main(str(tmp_path / "other"), methods=True)  # a bare --methods on the command line
    with pytest.raises(InputError, match=r"no encoder pre-trained for \['mae'\]: add the pretrain stage"):
        main(str(out), stages=["finetune"], methods=["mae"])


def test_methods_with_encoder_shipped_fine_tune_from_the_bundles_encoders_without_pretraining(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "run_bundle", lambda bundle, configs, **overrides: calls.append((bundle, overrides)))
    monkeypatch.setattr(pipeline, "BUNDLES", tmp_path / "bundles")
    for method in ("spark", "voco"):
        manifest = tmp_path / "bundles" / pipeline.METHODS[method] / "models" / "encoder.json"
        manifest.parent.mkdir(parents=True)
        manifest.write_text("{}")
    out = (tmp_path / "run").resolve()
    main(str(out), stages=["pretrain", "finetune"], methods=["spark", "voco"], encoder="shipped")
    assert [call[0] for call in calls] == [pipeline.DETECTOR_BUNDLE] * 3  # nothing pre-trained
    assert [call[1]["pretrained_encoder"] for call in calls] == [None] + [
        str(tmp_path / "bundles" / pipeline.METHODS[method] / "models" / "encoder.json") for method in ("spark", "voco")]

    with pytest.raises(InputError, match="resenc_models_genesis_pretrain ships no encoder"):
        main(str(tmp_path / "other"), stages=["finetune"], methods=["models_genesis"], encoder="shipped")
    with pytest.raises(InputError, match="no encoders are shipped for task brain_mri"):
        main(str(tmp_path / "brain"), stages=["finetune"], task="brain_mri", methods=["spark"], encoder="shipped")


def test_multitalent_pretrains_on_the_embedded_collection_made_once_with_the_tasks_stem(tmp_path, monkeypatch):
    import shared.data.synthetic.multitalent as collection
    from tools.pipeline_report import _scans

    calls, made = [], []

    def run_bundle(bundle, configs, **overrides):
        calls.append((bundle, overrides))
        overrides["output_dir"].mkdir(parents=True)

    def make(folder, **settings):
        made.append(folder)
        folder.mkdir(parents=True)
        (folder / collection.DATALIST_NAME).write_text("{}")
    monkeypatch.setattr(collection, "make_multitalent_dataset", make)
    monkeypatch.setattr(pipeline, "run_bundle", run_bundle)
    out = (tmp_path / "run").resolve()
    main(str(out), stages=["pretrain"], task="brain_mri", methods=["mae", "multitalent"])
    mae, multitalent = (overrides for _, overrides in calls)
    assert [bundle for bundle, _ in calls] == ["resenc_mae_pretrain", "resenc_multitalent_pretrain"]
    assert made == [out / "data" / "multitalent"] and multitalent["dataset_dir"] == made[0]
    assert mae["dataset_dir"] == out / "data" and "main_stem" not in mae
    # the exported encoder carries the brain stem (two channels), at the task's spacing
    assert multitalent["main_stem"] == "brain_mri" and multitalent["spacing"] == [2.0, 2.0, 2.0]
    assert "in_channels" not in multitalent  # each data set's stem has its own
    main(str(out), stages=["pretrain"], task="brain_mri", methods=["mae", "multitalent"], force=True)
    assert len(made) == 1 and len(calls) == 4  # the collection is made once

    assert _scans({"datasets": {"lung_ct": {}, "brain_mri": {}}}) == (
        "the training cases of the labelled data sets lung_ct, brain_mri")
    assert _scans({"splits": ["unlabelled"]}) == "['unlabelled'] of its data set"


def test_a_done_stage_runs_again_for_other_encoders_or_data_without_unlabelled_scans(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "run_bundle", lambda bundle, configs, **overrides: calls.append(bundle))
    out = tmp_path / "run"
    main(str(out), stages=["pretrain", "finetune"], methods=["spark"])
    calls.clear()
    main(str(out), stages=["pretrain", "finetune"], methods=["spark"])
    assert calls == []  # done before
    main(str(out), stages=["pretrain", "finetune"], methods=["spark", "voco"])  # a method added
    assert calls == ["resenc_spark_pretrain", "resenc_voco_pretrain"] + [pipeline.DETECTOR_BUNDLE] * 3

    settings = {"encoders": {"pretrained": "a.json"}, "pretrain_here": True}
    marker = tmp_path / "stages" / "data.json"
    marker.parent.mkdir()
    marker.write_text(json.dumps({"settings": {**settings, "pretrain_here": False}}))
    assert not pipeline._done_before(marker, settings)  # made without the unlabelled scans pre-training needs
    assert pipeline._done_before(marker, {**settings, "pretrain_here": False})
    marker = marker.with_name("finetune.json")
    marker.write_text(json.dumps({"settings": settings}))
    assert pipeline._done_before(marker, settings)
    assert not pipeline._done_before(marker, {**settings, "encoders": {"pretrained": "b.json"}})
    marker = marker.with_name("baseline.json")
    marker.write_text(json.dumps({"settings": settings}))
    assert pipeline._done_before(marker, {**settings, "encoders": {"pretrained": "b.json"}})


def test_the_report_says_whether_every_model_beat_twice_the_baseline(tmp_path):
    from tools.pipeline import write_report

    (tmp_path / "report" / "ranking").mkdir(parents=True)
    (tmp_path / "report" / "ranking" / "report.md").write_text("# Ranking\n")

    def metrics(ap):
        return {"AP_IoU_0.10_MaxDet_100": ap, "AP_IoU_0.10_MaxDet_100_ci95": [ap / 2, ap], "count/images": 10,
                "count/ground_truth": 18}

    write_report(tmp_path, {"scratch": metrics(0.5), "pretrained": metrics(0.3), "LoG baseline": metrics(0.1)})
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Both models learned" in report and "0.300 ≥ 0.200" in report and "(10 scans, 18 objects)" in report
    write_report(tmp_path, {"scratch": metrics(0.5), "pretrained": metrics(0.15), "LoG baseline": metrics(0.1)})
    assert "**Not every model learned**" in (tmp_path / "report" / "report.md").read_text()
    write_report(tmp_path, {"scratch": metrics(0.5), "mae": metrics(0.4), "spark": metrics(0.3),
                            "LoG baseline": metrics(0.1)})
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Every model learned" in report and "| spark |" in report and "mae 0.400 ≥ 0.200" in report


def test_runs_side_by_side_share_the_threads_and_a_failure_waits_for_the_others(tmp_path, monkeypatch):
    calls = {}

    def run_bundle(bundle, configs, *, threads=None, log=None, **overrides):
        calls[overrides["output_dir"].name] = (threads, log)
        if overrides["output_dir"].name == "scratch":
            raise SystemExit(2)

    monkeypatch.setattr(pipeline, "run_bundle", run_bundle)
    monkeypatch.setattr(pipeline, "side_by_side", lambda runs: 2)
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 4)
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(SystemExit) as failed:
        main(str(tmp_path / "run"), stages=["finetune"], encoder=str(tmp_path / "encoder.json"))
    assert failed.value.code == 2 and not (tmp_path / "run" / "stages" / "finetune.json").exists()
    assert calls == {"scratch": (2, None),
                     "pretrained": (2, tmp_path / "run" / "finetune" / "train_logs" / "pretrained.log")}


def test_a_run_beside_another_writes_its_log_and_shows_its_error(tmp_path, monkeypatch, capfd, caplog):
    import subprocess

    def bundle(command, env=None, stdout=None, stderr=None):
        assert env["OMP_NUM_THREADS"] == "1" and stderr == subprocess.STDOUT
        stdout.write("loading...\nnothing: no such folder\n")
        return subprocess.CompletedProcess(command, 2)

    monkeypatch.setattr(pipeline.subprocess, "run", bundle)
    with pytest.raises(SystemExit) as failed:
        pipeline.run_bundle("resenc_retina_unet_detection", ["train.json"], threads=1, log=tmp_path / "run.log",
                            dataset_dir=tmp_path / "nothing")
    assert failed.value.code == 2
    assert "nothing: no such folder" in capfd.readouterr().err  # the end of the log, on the console
    assert f"whole output: {tmp_path / 'run.log'}" in caplog.text
    assert (tmp_path / "run.log").read_text() == "loading...\nnothing: no such folder\n"


def test_one_run_at_a_time_on_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert SIDE_BY_SIDE(3) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    assert (SIDE_BY_SIDE(3), SIDE_BY_SIDE(1)) == (2, 1)


def test_every_model_trains_the_same_iterations_the_pretrained_ones_first_frozen(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "run_bundle", lambda bundle, configs, **overrides: calls.append(overrides))
    (tmp_path / "encoder.json").write_text("{}")
    main(str(tmp_path / "run"), stages=["finetune"], encoder=str(tmp_path / "encoder.json"),
         finetune_overrides={"epochs": 8, "freeze_epochs": 2})
    assert [(call["epochs"], call["freeze_epochs"]) for call in calls] == [(8, 2), (6, 2)]  # scratch freezes nothing
    with pytest.raises(InputError, match="must be below epochs"):
        main(str(tmp_path / "other"), stages=["finetune"], encoder=str(tmp_path / "encoder.json"),
             finetune_overrides={"epochs": 2, "freeze_epochs": 2})
