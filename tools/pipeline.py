"""The main job: embedded data → classical baseline → fine-tuning from a pre-trained encoder and from
scratch (same seed and budget) → inference and evaluation on the test split → a report comparing them.

    python -m tools.pipeline --out runs/quickstart
    python -m tools.pipeline --out runs/quickstart --encoder pretrain      # pre-train a new MAE encoder first
    python -m tools.pipeline --out runs/methods --methods "[mae,spark,models_genesis,voco,multitalent]"
    python -m tools.pipeline --out runs/shipped --methods "[mae,spark,models_genesis,voco,multitalent]" --encoder shipped
    python -m tools.pipeline --out runs/quickstart --stages "[finetune,evaluate,report]" --force True

By default the pre-trained side is the encoder the MAE bundle ships (pre-trained for far longer than this
job could, on the same kind of scans; its bundle docs give the command); ``--encoder pretrain`` trains a
new one in the ``pretrain`` stage, ``--encoder path/to/encoder.json`` takes any other (e.g. one made by
``tools.import_encoder``). ``--methods`` pre-trains one encoder per method named (each with its bundle,
into ``pretrain/<method>``) and fine-tunes and evaluates one model per method beside the one from scratch;
the self-supervised methods learn from the data's unlabelled scans, MultiTalent from the embedded labelled
segmentation collection (other scans, made in ``data/multitalent``); with ``--encoder shipped`` it
pre-trains nothing and fine-tunes from the encoder each method's bundle ships (the lung tasks).

Each stage runs the project's bundles the way a user would (``python -m monai.bundle run ...`` in a
subprocess; on a CPU-only machine a stage's runs go side by side, one per core, the first printing and
the others writing logs beside their outputs), shows its progress, writes under ``--out`` and marks
itself done in ``--out/stages/<stage>.json``; a done stage is skipped unless ``--force True``. A stage
that was interrupted resumes where it stopped when run again (training from its last checkpoint).
``--force True`` starts a stage again from nothing: the training stages (pretrain, finetune) train into
a fresh folder beside their outputs (``.pretrain.fresh``, ``.finetune.fresh``) and replace the old
outputs only once complete; the runs they did not make this time (another method's encoder or model,
with ``--methods`` naming fewer) are kept. A stage that runs takes the done mark off every stage after
it, since their outputs were made from its old ones: the next run re-does them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from shared.io.atomic import write_json
from shared.io.errors import InputError
from tools._cli import check_writable_folder, run_cli
from tools.pipeline_report import BASELINE, write_report

STAGES = ("data", "baseline", "pretrain", "finetune", "evaluate", "report")
PRETRAIN_BUNDLE = "resenc_mae_pretrain"
DETECTOR_BUNDLE = "resenc_retina_unet_detection"
SCRATCH, PRETRAINED = "scratch", "pretrained"
#: pre-training methods ``--methods`` can compare, and their bundles
METHODS = {"mae": PRETRAIN_BUNDLE, "spark": "resenc_spark_pretrain",
           "models_genesis": "resenc_models_genesis_pretrain", "voco": "resenc_voco_pretrain",
           "multitalent": "resenc_multitalent_pretrain"}
#: supervised pre-training: its bundle learns from the embedded MultiTalent collection (labelled
#: segmentation data sets, generated at seeds of their own into ``data/multitalent``), not from the task's
#: unlabelled scans
MULTITALENT = "multitalent"
BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
#: the folders of single runs inside a stage's folder (``pretrain/<method>``, ``finetune/<model>``)
RUN_FOLDERS = (*METHODS, SCRATCH, PRETRAINED)
#: ``--encoder`` value that pre-trains a new encoder in the ``pretrain`` stage
PRETRAIN = "pretrain"
#: ``--encoder`` value that, with ``--methods``, fine-tunes from the encoders the methods' bundles ship
SHIPPED = "shipped"

logger = logging.getLogger("pipeline")

#: stages that write one folder of --out and are forced into a fresh one, swapped in when complete
STAGE_FOLDERS = {"pretrain": "pretrain", "finetune": "finetune"}

#: the quick profiles shrunk further for a job of about 15 minutes on 2 CPU cores (pip included; README
#: has the measured times); the bundles' own quick (or paper) settings are overrides away. Fine-tuning:
#: 250 iterations for every model, a pre-trained one's first 25 with its encoder frozen (the paper's
#: warm-up); validation in one 96³ window. Measured on one seed each (docs/pretraining_results.md): at
#: 175 iterations the model from scratch had not yet learned the nodules (test AP@0.1 0.061, the
#: pre-trained one 0.473); without the warm-up the pre-trained one fell to 0.162 (scratch 0.330); faster
#: recipes failed: 32³ patches at batch 4 (200 iterations: pre-trained 0.024) and detection strides 4
#: and 8 without 2 (250 iterations: both 0.000)
PRETRAIN_PROFILE = {"patch_size": [48, 48, 48], "iterations_per_epoch": 20, "epochs": 3}
FINETUNE_PROFILE = {"patch_size": [48, 48, 48], "iterations_per_epoch": 25, "epochs": 10, "validate_every": 10,
                    "freeze_epochs": 1, "validate#inferer#patch_size": [96, 96, 96]}
#: test-split inference in one 96³ window per quick scan (the scans are about 90³ at 1.5 mm): 2.5x faster
#: than 48³ windows at overlap 0.5, at a cost in AP@0.1 (0.05 on one model; 0.448 vs 0.330 between two
#: scratch runs trained alike, docs/pretraining_results.md)
EVALUATE_PROFILE = {"inferer#patch_size": [96, 96, 96]}
#: per embedded task: bundle overrides its scans need (channels, classes, spacing) for (pre-training,
#: fine-tuning), the encoder a bundle ships for it (None: pre-trained in the pipeline), and whether the
#: classical LoG baseline applies (lung CT)
TASKS = {
    "lung_nodules": ({}, {"num_classes": 1}, "resenc_mae_pretrain/models/encoder.json", True),
    "lung_ct": ({}, {}, "resenc_mae_pretrain/models/encoder.json", True),
    "brain_mri": ({"in_channels": 2, "spacing": [2.0, 2.0, 2.0], "main_stem": "brain_mri"},
                  {"in_channels": 2, "num_classes": 1, "spacing": [2.0, 2.0, 2.0]}, None, False),
}


def main(out: str = "runs/quickstart", stages: Sequence[str] = STAGES, force: bool = False, seed: int = 0,
         task: str = "lung_nodules", encoder: str | None = None, methods: Sequence[str] | None = None,
         num_training: int | None = None, pretrain_overrides: dict | None = None,
         finetune_overrides: dict | None = None, bootstrap: int = 1000, data_overrides: dict | None = None) -> None:
    """Run the pipeline's stages in order and print where the report is.

    Args:
        out: output folder; every stage writes below it.
        stages: which stages to run (default all): data, baseline, pretrain, finetune, evaluate, report.
        force: run the stages again from nothing, even those done (training stages replace their old
            outputs only once the new ones are complete).
        seed: data, pre-training and fine-tuning seed (the fine-tunings share it).
        task: embedded data set: ``lung_nodules`` (default; chest CT, nodule vs background, LUNA16's
            task), ``lung_ct`` (the same scans, benign vs malignant) or ``brain_mri`` (two MRI channels).
        encoder: the pre-trained encoder's ``encoder.json``; default: the one shipped for the task (the
            MAE bundle's, for the lung tasks), ``pretrain`` to pre-train a new one in the pretrain stage;
            with ``methods``, ``shipped`` takes each method's shipped encoder instead of pre-training.
        methods: instead of one encoder, pre-train one per method (``mae``, ``spark``, ``models_genesis``,
            ``voco`` on the data's unlabelled scans; ``multitalent`` on the embedded segmentation
            collection, made in ``data/multitalent``) and compare a model fine-tuned from each with scratch.
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
    pretrain_task, finetune_task, shipped, has_baseline = TASKS[task]
    methods = _methods(methods, encoder, root, pretrains="pretrain" in stages, finetunes="finetune" in stages)
    if methods and encoder == SHIPPED:
        encoders = {method: _shipped_encoder(method, shipped, task, check="finetune" in stages) for method in methods}
    elif methods:
        encoders = {method: str(root / "pretrain" / method / "encoder.json") for method in methods}
    else:
        encoders = {PRETRAINED: _encoder(encoder, shipped, root, task, check="finetune" in stages)}
    pretrain_here = (bool(methods) and encoder != SHIPPED) or encoders.get(PRETRAINED) == _pretrained_here(root)
    settings = dict(seed=seed, task=task, encoders=encoders, methods=methods, pretrain_here=pretrain_here,
                    num_training=num_training, bootstrap=bootstrap,
                    data_overrides=data_overrides or {},
                    pretrain_overrides={**PRETRAIN_PROFILE, **pretrain_task, **(pretrain_overrides or {})},
                    finetune_overrides={**FINETUNE_PROFILE, **finetune_task, **(finetune_overrides or {})})
    skipped = {"pretrain": not pretrain_here, "baseline": not has_baseline}
    for stage in STAGES:
        if stage not in stages or skipped.get(stage):
            continue
        marker = root / "stages" / f"{stage}.json"
        if not force and _done_before(marker, settings):
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


def _encoder(encoder: str | None, shipped: str | None, root: Path, task: str, check: bool) -> str:
    """The encoder.json the pre-trained variant starts from (see :func:`main`'s ``encoder``); ``check``:
    refuse a missing one now rather than after the stages before fine-tuning."""
    if encoder == PRETRAIN or (encoder in (None, SHIPPED) and shipped is None):
        return _pretrained_here(root)
    path = Path(encoder) if encoder not in (None, SHIPPED) else BUNDLES / shipped
    if check and not path.is_file():
        hint = ("the bundle ships it: is the clone complete?" if encoder is None
                else "give an encoder.json (an export or a tools.import_encoder output), or --encoder pretrain")
        raise InputError(path, f"no such encoder manifest for task {task}; {hint}")
    logger.info("pre-trained variant: fine-tuned from %s", path)
    return str(path.resolve())


def _shipped_encoder(method: str, shipped: str | None, task: str, check: bool) -> str:
    """The encoder ``method``'s bundle ships (``--methods ... --encoder shipped``); ``check``: refuse a
    bundle that ships none, or a task the shipped encoders were not pre-trained for."""
    if shipped is None:
        raise InputError(None, f"no encoders are shipped for task {task} (they are pre-trained on lung CT): "
                               "drop --encoder shipped to pre-train them here")
    path = BUNDLES / METHODS[method] / "models" / "encoder.json"
    if check and not path.is_file():
        raise InputError(path, f"bundle {METHODS[method]} ships no encoder: is the clone complete?")
    return str(path.resolve())


def _done_before(marker: Path, settings: dict) -> bool:
    """Whether a stage's done mark holds for these settings: not for a model stage made for other
    encoders (a method added to ``--methods``, another ``--encoder``), nor for data made without the
    unlabelled scans that pre-training here now needs; the baseline depends on neither."""
    if not marker.exists():
        return False
    before = json.loads(marker.read_text()).get("settings", {})
    if marker.stem == "data":
        return before.get("pretrain_here", True) or not settings["pretrain_here"]
    return marker.stem == "baseline" or before.get("encoders") == settings["encoders"]


def _methods(methods, encoder: str | None, root: Path, *, pretrains: bool, finetunes: bool) -> list[str]:
    """The pre-training methods to compare (``--methods``), checked; without the pretrain stage their
    encoders must be there already."""
    if methods is None or methods == []:
        return []
    if isinstance(methods, str):  # a single name on the command line
        methods = [methods]
    if not isinstance(methods, (list, tuple)) or not methods:
        raise InputError(None, f"--methods takes method names, e.g. \"[mae,spark]\", not {methods!r}")
    unknown = [method for method in methods if method not in METHODS]
    if unknown:
        raise InputError(None, f"unknown pre-training method(s) {unknown}; methods are {list(METHODS)}")
    if encoder not in (None, SHIPPED):
        raise InputError(None, "--encoder and --methods exclude each other: --methods pre-trains its own encoders "
                               "(or, with --encoder shipped, takes the ones their bundles ship)")
    missing = [method for method in methods if not (root / "pretrain" / method / "encoder.json").is_file()]
    if finetunes and not pretrains and missing and encoder is None:
        raise InputError(root / "pretrain", f"no encoder pre-trained for {missing}: add the pretrain stage")
    return list(dict.fromkeys(methods))


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
    _keep_other_runs(root / name, staging)
    _replace_folder(staging, root / name)
    logger.info("stage %s: new outputs in %s", stage, root / name)


def _keep_other_runs(old: Path, new: Path) -> None:
    """Link into ``new`` the run folders ``old`` holds and ``new`` does not (``pretrain/<method>``,
    ``finetune/<model>``): the runs this forced stage did not make survive the swap; logs and caches of
    the old runs do not. Hard links where the file system has them, copies where not; the old files stay
    where they are until the swap."""
    if not old.is_dir():
        return
    for entry in sorted(old.iterdir()):
        kept = new / entry.name
        if entry.name in RUN_FOLDERS and entry.is_dir() and not kept.exists():
            shutil.copytree(entry, kept, copy_function=_link_or_copy)
            logger.info("%s: kept (this forced run did not make it again)", entry)


def _link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


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


def _pretrained_here(root: Path) -> str:
    """The encoder manifest the ``pretrain`` stage writes for ``--encoder pretrain``."""
    return str(root / "pretrain" / "encoder.json")


def _variants(encoders: dict[str, str]) -> list[str]:
    """The fine-tuned models: from scratch, then one per pre-trained encoder."""
    return [SCRATCH, *encoders]


def make_data(root: Path, *, seed: int, task: str, pretrain_here: bool, num_training: int | None,
              data_overrides: dict, **_) -> None:
    from shared.data.synthetic import make_dataset

    settings = {"preset": "quick", "seed": seed, "workers": min(2, os.cpu_count() or 1), **data_overrides}
    counts = dict(settings.get("counts", {}))
    if num_training is not None:
        counts["training"] = int(num_training)
    if not pretrain_here:
        counts.setdefault("unlabelled", 0)  # no pre-training here: the unlabelled scans would go unread
    make_dataset(task, root / "data", **{**settings, "counts": counts})


def baseline(root: Path, *, bootstrap: int, **_) -> None:
    """The classical LoG blob detector on the test split, evaluated like the models (``baseline/``)."""
    from shared.metrics.evaluation import evaluate_detections
    from tools.baseline import predict

    datalist = root / "data" / "datalist.json"
    predictions = root / "baseline" / "predictions.json"
    write_json(predictions, predict(datalist, "test"))
    shutil.rmtree(root / "baseline" / "evaluation", ignore_errors=True)
    evaluate_detections(predictions, datalist, root / "baseline" / "evaluation", split="test",
                        class_names=json.loads(datalist.read_text()).get("classes"), bootstrap=bootstrap,
                        data_root=datalist.parent)


def pretrain(root: Path, *, seed: int, pretrain_overrides: dict, methods: Sequence[str] = (),
             out_dir: Path | None = None, **_) -> None:
    """One MAE encoder in ``pretrain/`` (``--encoder pretrain``), or one per method in ``pretrain/<method>``."""
    folder = out_dir or root / "pretrain"
    outputs = {method: folder / method for method in methods} or {"mae": folder}
    data = {method: _multitalent_data(root / "data" / MULTITALENT, seed) if method == MULTITALENT else root / "data"
            for method in outputs}
    run_side_by_side({method: (METHODS[method], ["train.json", "quick.json"],
                               dict(dataset_dir=data[method], output_dir=output, seed=seed,
                                    **_known_settings(METHODS[method], pretrain_overrides)))
                      for method, output in outputs.items()}, logs=folder / "logs")


def _multitalent_data(folder: Path, seed: int) -> Path:
    """The embedded MultiTalent collection in ``folder``, made unless its datalist (written last) is there:
    the same seed gives the same bytes, so an interrupted one is simply made again."""
    from shared.data.synthetic.multitalent import DATALIST_NAME, make_multitalent_dataset

    if not (folder / DATALIST_NAME).is_file():
        logger.info("making the MultiTalent collection in %s", folder)
        make_multitalent_dataset(folder, preset="quick", seed=seed, workers=min(2, os.cpu_count() or 1))
    return folder


def _known_settings(bundle: str, overrides: dict) -> dict:
    """The overrides a bundle has settings for (``a#b`` counts as ``a``): the profile's patch size means
    nothing to VoCo, which samples crops."""
    configs = BUNDLES / bundle / "configs"
    known = {key for name in ("train.json", "quick.json") for key in json.loads((configs / name).read_text())}
    dropped = sorted(key for key in overrides if key.split("#")[0] not in known)
    if dropped:
        logger.info("%s has no setting %s: not passed", bundle, ", ".join(dropped))
    return {key: value for key, value in overrides.items() if key not in dropped}


def finetune(root: Path, *, seed: int, encoders: dict[str, str], finetune_overrides: dict,
             out_dir: Path | None = None, **_) -> None:
    folder = out_dir or root / "finetune"
    # one preprocessing cache for all (same scans, same preprocessing); the first run fills it, the others
    # wait for its lock
    run_side_by_side({variant: (DETECTOR_BUNDLE, ["train.json", "quick.json"],
                                dict(dataset_dir=root / "data", output_dir=folder / variant, cache_dir=folder / "cache",
                                     pretrained_encoder=encoders.get(variant), seed=seed,
                                     **_same_total(finetune_overrides, pretrained=variant != SCRATCH)))
                      for variant in _variants(encoders)}, logs=folder / "train_logs")


def _same_total(overrides: dict, pretrained: bool) -> dict:
    """A pre-trained model's frozen warm-up epochs come out of its ``epochs`` (the bundle adds them on top):
    every model trains the same number of iterations and is validated, saved and evaluated at its last."""
    if not pretrained or not overrides.get("freeze_epochs"):
        return overrides
    if overrides["freeze_epochs"] >= overrides["epochs"]:
        raise InputError(None, f"freeze_epochs ({overrides['freeze_epochs']}) must be below epochs "
                               f"({overrides['epochs']}): the frozen warm-up is part of a pre-trained model's budget")
    return {**overrides, "epochs": overrides["epochs"] - overrides["freeze_epochs"]}


def evaluate(root: Path, *, encoders: dict[str, str], finetune_overrides: dict, bootstrap: int, **_) -> None:
    folder = root / "finetune"
    run_side_by_side({variant: (DETECTOR_BUNDLE, ["train.json", "evaluate.json", "quick.json"],
                                dict(dataset_dir=root / "data", output_dir=folder / variant, cache_dir=folder / "cache",
                                     bootstrap=bootstrap, **{**finetune_overrides, **EVALUATE_PROFILE}))
                      for variant in _variants(encoders)}, logs=folder / "evaluate_logs")


def report(root: Path, *, bootstrap: int, encoders: dict[str, str], task: str = "lung_nodules",
           finetune_overrides: dict | None = None, **_) -> None:
    from shared.metrics.evaluation import compare_runs

    runs = {variant: root / "finetune" / variant / "evaluation" for variant in _variants(encoders)}
    if (root / "baseline" / "evaluation" / "metrics.json").exists():
        runs[BASELINE] = root / "baseline" / "evaluation"
    compare_runs([str(run) for run in runs.values()], str(root / "report" / "ranking"), names=list(runs),
                 draws=bootstrap)
    metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in runs.items()}
    write_report(root, metrics, task, encoders=encoders, budget=_budget(finetune_overrides or {}))


def _budget(overrides: dict) -> dict:
    """The fine-tuning budget the quick configuration gets with the pipeline's overrides."""
    quick = json.loads((BUNDLES / DETECTOR_BUNDLE / "configs" / "quick.json").read_text())
    merged = {**quick, **overrides}
    return {"iterations": merged["iterations_per_epoch"] * merged["epochs"],
            "frozen encoder iterations (pretrained)": merged["iterations_per_epoch"] * merged.get("freeze_epochs", 0),
            "patch": merged["patch_size"], "batch": merged["batch_size"], "encoder": merged["encoder"],
            "detection strides": merged["detection_strides"]}


def side_by_side(runs: int) -> int:
    """How many bundle runs of a stage share the machine at once: on a CPU-only machine as many as it has
    cores (up to ``runs``; torch's threads are split between them), since a training step's convolutions
    use two threads far from twice as well as one; one at a time on a GPU, which one run fills."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, min(runs, os.cpu_count() or 1))


def run_side_by_side(runs: dict[str, tuple[str, Sequence[str], dict]], logs: Path) -> None:
    """:func:`run_bundle` for each named ``(bundle, config files, overrides)``, :func:`side_by_side` at a
    time. The first run prints to the console; the others write ``logs/<name>.log``. A failed run stops
    the stage once the runs beside it have finished."""
    workers = side_by_side(len(runs))
    if workers == 1:
        for bundle, configs, overrides in runs.values():
            run_bundle(bundle, configs, **overrides)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    logs.mkdir(parents=True, exist_ok=True)
    first = next(iter(runs))
    logger.info("%d runs side by side, %d torch thread(s) each; %s prints here, the others write %s/<name>.log",
                workers, threads, first, logs)

    def run(name: str) -> int:
        bundle, configs, overrides = runs[name]
        try:
            run_bundle(bundle, configs, threads=threads, log=None if name == first else logs / f"{name}.log",
                       **overrides)
        except SystemExit as failed:
            return int(failed.code or 1)
        return 0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        failed = [status for status in pool.map(run, runs) if status]
    if failed:
        raise SystemExit(failed[0])


def run_bundle(bundle: str, config_files: Sequence[str], *, threads: int | None = None, log: Path | None = None,
               **overrides) -> None:
    """``python -m monai.bundle run`` on a shipped bundle, in a subprocess, streaming its output (or
    writing it to ``log``), with ``threads`` torch threads (default: torch's own choice)."""
    configs = [str(BUNDLES / bundle / "configs" / name) for name in config_files]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(configs)]
    for key, value in overrides.items():
        command += [f"--{key}", _cli_value(value)]
    logger.info("running %s%s", " ".join(command), f" > {log}" if log else "")
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    if log is None:
        status = subprocess.run(command, env=environment).returncode
    else:
        with open(log, "w") as output:
            status = subprocess.run(command, env=environment, stdout=output, stderr=subprocess.STDOUT).returncode
    if status:
        # the bundle has printed its own error (one line for a user error, exit status 2): pass its
        # status on instead of a traceback of this subprocess call
        if log is not None:
            sys.stderr.write("".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:]))
        logger.error("bundle %s failed (exit status %d); its error is above%s", bundle, status,
                     f" (whole output: {log})" if log else "")
        raise SystemExit(status)


def _cli_value(value) -> str:
    """A value as MONAI's command line parses it (Fire): None and booleans spelled as Python."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


STAGE_FUNCTIONS = {"data": make_data, "baseline": baseline, "pretrain": pretrain, "finetune": finetune,
                   "evaluate": evaluate, "report": report}

if __name__ == "__main__":
    run_cli(main)
