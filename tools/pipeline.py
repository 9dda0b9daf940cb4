"""The main job: embedded data → MAE pre-training → fine-tuning (pre-trained and from scratch, same seed
and budget) → inference and evaluation on the test split → a report comparing the two.

    python -m tools.pipeline --out runs/quickstart
    python -m tools.pipeline --out runs/quickstart --stages "[finetune,evaluate,report]" --force True

Each stage runs the project's bundles the way a user would (``python -m monai.bundle run ...`` in a
subprocess), shows its progress, writes under ``--out`` and marks itself done in
``--out/stages/<stage>.json``; a done stage is skipped unless ``--force True``. A stage that was
interrupted resumes where it stopped when run again (training from its last checkpoint). ``--force
True`` starts a stage again from nothing: the training stages (pretrain, finetune) train into a fresh
folder beside their outputs (``.pretrain.fresh``, ``.finetune.fresh``) and replace the old outputs only
once complete. A stage that runs takes the done mark off every stage after it, since their outputs
were made from its old ones: the next run re-does them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from shared.io.atomic import write_json
from shared.io.errors import InputError
from tools._cli import check_writable_folder, run_cli

STAGES = ("data", "pretrain", "finetune", "evaluate", "report")
PRETRAIN_BUNDLE = "resenc_mae_pretrain"
DETECTOR_BUNDLE = "resenc_retina_unet_detection"
VARIANTS = ("scratch", "mae")
BUNDLES = Path(__file__).resolve().parents[1] / "bundles"

logger = logging.getLogger("pipeline")

#: stages that write one folder of --out and are forced into a fresh one, swapped in when complete
STAGE_FOLDERS = {"pretrain": "pretrain", "finetune": "finetune"}

#: the quick profiles shrunk further so the whole job fits in about 15 minutes on 2 CPU cores; a real
#: comparison needs the bundles' own quick (or paper) settings: pass overrides to get them
PRETRAIN_PROFILE = {"patch_size": [48, 48, 48], "iterations_per_epoch": 20, "epochs": 3}
FINETUNE_PROFILE = {"patch_size": [48, 48, 48], "iterations_per_epoch": 40, "epochs": 3, "validate_every": 3}
#: per embedded task: bundle overrides its scans need (channels, classes, spacing) for (pre-training, fine-tuning)
TASKS = {
    "lung_ct": ({}, {}),
    "brain_mri": ({"in_channels": 2, "spacing": [2.0, 2.0, 2.0]},
                  {"in_channels": 2, "num_classes": 1, "spacing": [2.0, 2.0, 2.0]}),
}


def main(out: str = "runs/quickstart", stages: Sequence[str] = STAGES, force: bool = False, seed: int = 0,
         task: str = "lung_ct",
         num_training: int | None = None, pretrain_overrides: dict | None = None,
         finetune_overrides: dict | None = None, bootstrap: int = 1000, data_overrides: dict | None = None) -> None:
    """Run the pipeline's stages in order and print where the report is.

    Args:
        out: output folder; every stage writes below it.
        stages: which stages to run (default all): data, pretrain, finetune, evaluate, report.
        force: run the stages again from nothing, even those done (training stages replace their old
            outputs only once the new ones are complete).
        seed: data, pre-training and fine-tuning seed (the two fine-tunings share it).
        task: embedded data set, ``lung_ct`` (default) or ``brain_mri`` (two MRI channels, one class).
        num_training: labelled training scans (default: the quick preset's); the label budget.
        pretrain_overrides, finetune_overrides: bundle overrides on top of :data:`PRETRAIN_PROFILE` and
            :data:`FINETUNE_PROFILE`, e.g. "{'epochs': 10}".
        bootstrap: bootstrap draws for confidence intervals and the ranking.
        data_overrides: keyword arguments of ``shared.data.synthetic.make_dataset`` (e.g. a smaller
            ``shape`` or ``counts`` for a smoke test).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        raise InputError(None, f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    if task not in TASKS:
        raise InputError(None, f"unknown task {task!r}; tasks are {list(TASKS)}")
    root = check_writable_folder(Path(out).resolve(), what="--out")
    _recover_stage_folders(root)
    pretrain_task, finetune_task = TASKS[task]
    settings = dict(seed=seed, task=task, num_training=num_training, bootstrap=bootstrap,
                    data_overrides=data_overrides or {},
                    pretrain_overrides={**PRETRAIN_PROFILE, **pretrain_task, **(pretrain_overrides or {})},
                    finetune_overrides={**FINETUNE_PROFILE, **finetune_task, **(finetune_overrides or {})})
    for stage in STAGES:
        if stage not in stages:
            continue
        marker = root / "stages" / f"{stage}.json"
        if marker.exists() and not force:
            logger.info("stage %s: done before (%s), skipped", stage, marker)
            continue
        logger.info("stage %s: starting", stage)
        start = time.perf_counter()
        run_stage(stage, root, fresh=force, **settings)
        write_json(marker, {"stage": stage, "seconds": round(time.perf_counter() - start, 1), "settings": settings})
        _mark_not_done(root, STAGES[STAGES.index(stage) + 1:])
        logger.info("stage %s: done in %.0f s", stage, time.perf_counter() - start)
    report = root / "report" / "report.md"
    print(f"\nreport: {report}" if report.exists() else f"\noutputs: {root}")


def _mark_not_done(root: Path, stages: Sequence[str]) -> None:
    for stage in stages:
        marker = root / "stages" / f"{stage}.json"
        if marker.exists():
            marker.unlink()
            logger.info("stage %s: its inputs changed, so it is no longer done", stage)


def run_stage(stage: str, root: Path, *, fresh: bool, **settings) -> None:
    """Run one stage; ``fresh``: from nothing, into a new folder that replaces the old one once complete.

    Without ``fresh`` a stage writes in place, so a training stage killed part-way resumes from its
    last checkpoint (a finished one says so and does nothing).
    """
    name = STAGE_FOLDERS.get(stage)
    if name is None or not fresh:
        STAGE_FUNCTIONS[stage](root, **settings)
        return
    staging = root / f".{name}.fresh"
    shutil.rmtree(staging, ignore_errors=True)  # a forced run killed earlier: "from nothing" again
    STAGE_FUNCTIONS[stage](root, out_dir=staging, **settings)
    _replace_folder(staging, root / name)
    logger.info("stage %s: new outputs in %s", stage, root / name)


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; the old ``target`` is set aside first and deleted last (a kill in
    between is repaired by :func:`_recover_stage_folders`)."""
    old = target.with_name(f".{target.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _recover_stage_folders(root: Path) -> None:
    """Undo what a pipeline killed during a forced stage left: an unfinished fresh folder is deleted,
    old outputs set aside but not yet replaced are put back."""
    for name in STAGE_FOLDERS.values():
        target, old = root / name, root / f".{name}.replaced"
        if old.exists() and not target.exists():
            os.replace(old, target)
            logger.info("%s: restored the outputs a killed forced run had set aside", target)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(root / f".{name}.fresh", ignore_errors=True)


def make_data(root: Path, *, seed: int, task: str, num_training: int | None, data_overrides: dict, **_) -> None:
    from shared.data.synthetic import make_dataset

    settings = {"preset": "quick", "seed": seed, **data_overrides}
    if num_training is not None:
        settings["counts"] = {**settings.get("counts", {}), "training": int(num_training)}
    make_dataset(task, root / "data", **settings)


def pretrain(root: Path, *, seed: int, pretrain_overrides: dict, out_dir: Path | None = None, **_) -> None:
    run_bundle(PRETRAIN_BUNDLE, ["train.json", "quick.json"], dataset_dir=root / "data",
               output_dir=out_dir or root / "pretrain", seed=seed, **pretrain_overrides)


def finetune(root: Path, *, seed: int, finetune_overrides: dict, out_dir: Path | None = None, **_) -> None:
    for variant in VARIANTS:
        encoder = str(root / "pretrain" / "encoder.json") if variant == "mae" else None
        run_bundle(DETECTOR_BUNDLE, ["train.json", "quick.json"], dataset_dir=root / "data",
                   output_dir=(out_dir or root / "finetune") / variant, pretrained_encoder=encoder, seed=seed,
                   **finetune_overrides)


def evaluate(root: Path, *, finetune_overrides: dict, bootstrap: int, **_) -> None:
    for variant in VARIANTS:
        run_bundle(DETECTOR_BUNDLE, ["train.json", "evaluate.json", "quick.json"], dataset_dir=root / "data",
                   output_dir=root / "finetune" / variant, bootstrap=bootstrap, **finetune_overrides)


def report(root: Path, *, bootstrap: int, task: str = "lung_ct", **_) -> None:
    from shared.metrics.evaluation import compare_runs

    runs = [root / "finetune" / variant / "evaluation" for variant in VARIANTS]
    compare_runs([str(run) for run in runs], str(root / "report" / "ranking"), names=list(VARIANTS), draws=bootstrap)
    metrics = {variant: json.loads((run / "metrics.json").read_text()) for variant, run in zip(VARIANTS, runs)}
    write_report(root, metrics, task)


def write_report(root: Path, metrics: dict[str, dict], task: str = "lung_ct") -> None:
    """The pipeline's summary: one row per variant with bootstrap intervals, links to the plots."""
    from shared.io.atomic import write_text

    keys = ("AP_IoU_0.10_MaxDet_100", "mAP_IoU_0.10_0.50_0.05_MaxDet_100", "FROC_score_IoU_0.10")
    lines = [f"# Pre-trained (MAE) vs from scratch: ResEnc Retina U-Net on the embedded {task} data", "",
             "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for variant, values in metrics.items():
        cells = [_with_interval(values, key) for key in keys]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", "Intervals: 95% bootstrap over test images.", "",
              (root / "report" / "ranking" / "report.md").read_text().replace("# ", "## ", 1), "", "## Plots", ""]
    for variant in metrics:
        plots = sorted(path.name for path in (root / "finetune" / variant / "evaluation").glob("*.png"))
        lines.append(f"- {variant}: " + ", ".join(f"`finetune/{variant}/evaluation/{name}`" for name in plots))
    lines.append("- rank histograms: `report/ranking/rank_histograms.png`")
    write_text(root / "report" / "report.md", "\n".join(lines) + "\n")


def _with_interval(values: dict, key: str) -> str:
    value, interval = values.get(key), values.get(f"{key}_ci95")
    if value is None:
        return "n/a"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"


def run_bundle(bundle: str, config_files: Sequence[str], **overrides) -> None:
    """``python -m monai.bundle run`` on a shipped bundle, in a subprocess, streaming its output."""
    configs = [str(BUNDLES / bundle / "configs" / name) for name in config_files]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(configs)]
    for key, value in overrides.items():
        command += [f"--{key}", _cli_value(value)]
    logger.info("running %s", " ".join(command))
    status = subprocess.run(command).returncode
    if status:
        # the bundle has printed its own error (one line for a user error, exit status 2): pass its
        # status on instead of a traceback of this subprocess call
        logger.error("bundle %s failed (exit status %d); its error is above", bundle, status)
        raise SystemExit(status)


def _cli_value(value) -> str:
    """A value as MONAI's command line parses it (Fire): None and booleans spelled as Python."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


STAGE_FUNCTIONS = {"data": make_data, "pretrain": pretrain, "finetune": finetune, "evaluate": evaluate,
                   "report": report}

if __name__ == "__main__":
    run_cli(main)
