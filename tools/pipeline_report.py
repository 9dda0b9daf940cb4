"""The main job's report (``report/report.md`` of :mod:`tools.pipeline`): one row per model with bootstrap
intervals, whether each model reached twice the classical baseline, what was compared, the ranking and
the plots."""

from __future__ import annotations

import json
from pathlib import Path

from shared.io.atomic import write_text

BASELINE = "LoG baseline"

#: a model "has learned" at this multiple of the classical baseline's AP@0.1 on the same test scans
LEARNED_FACTOR = 2.0
KEYS = ("AP_IoU_0.10_MaxDet_100", "mAP_IoU_0.10_0.50_0.05_MaxDet_100", "FROC_score_IoU_0.10")


def write_report(root: Path, metrics: dict[str, dict], task: str = "lung_nodules", *,
                 encoders: dict[str, str] | None = None, budget: dict | None = None) -> None:
    """The pipeline's summary: one row per model with bootstrap intervals, the baseline check, what
    the comparison can show, links to the plots."""
    lines = [f"# Pre-trained vs from scratch: ResEnc Retina U-Net on the embedded {task} data", "",
             "| model | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 1) + "|"]
    for name, values in metrics.items():
        lines.append(f"| {name} | " + " | ".join(_with_interval(values, key) for key in KEYS) + " |")
    lines += ["", "Values in [0, 1]; brackets: 95% bootstrap interval over the test scans "
              f"({_count(metrics, 'images')} scans, {_count(metrics, 'ground_truth')} objects).", ""]
    lines += _learned_lines(metrics) + [""] + _setting_lines(encoders or {}, budget)
    lines += ["", (root / "report" / "ranking" / "report.md").read_text().replace("# ", "## ", 1), "", "## Plots", ""]
    for name in metrics:
        folder = (root / "baseline") if name == BASELINE else (root / "finetune" / name)
        plots = sorted(path.name for path in (folder / "evaluation").glob("*.png"))
        lines.append(f"- {name}: " + ", ".join(f"`{(folder / 'evaluation' / plot).relative_to(root)}`" for plot in plots))
    lines.append("- rank histograms: `report/ranking/rank_histograms.png`")
    write_text(root / "report" / "report.md", "\n".join(lines) + "\n")


def _count(metrics: dict[str, dict], what: str) -> str:
    values = {values.get(f"count/{what}") for values in metrics.values()} - {None}
    return str(values.pop()) if len(values) == 1 else "?"


def _learned_lines(metrics: dict[str, dict]) -> list[str]:
    """Whether every model reached :data:`LEARNED_FACTOR` times the baseline's AP@0.1."""
    base = metrics.get(BASELINE, {}).get(KEYS[0])
    if base is None:
        return ["No classical baseline for this task: the table alone says how far the models got."]
    bar = LEARNED_FACTOR * base
    models = {name: values[KEYS[0]] for name, values in metrics.items() if name != BASELINE}
    verdicts = [f"{name} {ap:.3f} {'≥' if ap >= bar else '<'} {bar:.3f}" for name, ap in models.items()]
    learned = all(ap >= bar for ap in models.values())
    head = ("**Not every model learned**" if not learned else
            "Both models learned" if len(models) == 2 else "Every model learned")
    return [f"{head}: AP@0.1 against {LEARNED_FACTOR:g}× the classical baseline's {base:.3f} on the same "
            f"scans ({'; '.join(verdicts)})."]


def _setting_lines(encoders: dict[str, str], budget: dict | None) -> list[str]:
    lines = ["## What was compared", ""]
    if budget:
        frozen = budget["frozen encoder iterations (pretrained)"]
        lines.append(f"{'Both' if len(encoders) == 1 else 'All'} fine-tunings: {budget['iterations']} iterations, "
                     f"patch {budget['patch']}, batch {budget['batch']}, encoder {json.dumps(budget['encoder'])}, "
                     f"detection strides {budget['detection strides']}, "
                     "same seed" + (f"; {'the' if len(encoders) == 1 else 'each'} pre-trained one spends the first "
                                    f"{frozen} of them with its encoder frozen (the paper's warm-up)." if frozen else "."))
    for name, encoder in encoders.items():
        if not Path(encoder).is_file():
            continue
        manifest = json.loads(Path(encoder).read_text())
        settings, data = manifest.get("method_settings", {}), manifest.get("data", {})
        lines.append(f"Pre-trained encoder of `{name}`: `{encoder}`: {manifest.get('method')}, "
                     f"{settings.get('iterations', '?')} iterations at {_sample_size(settings)}, batch "
                     f"{settings.get('batch_size', '?')}, on {data.get('num_volumes', '?')} scans ({_scans(data)}); "
                     "the manifest has every setting.")
    lines += ["", "What this can show: whether each model detects the nodules far better than a blob filter, and "
              "how far apart the models are relative to the bootstrap intervals over this small test split. What "
              "it cannot: a difference inside the intervals, from one seed, is not evidence that pre-training "
              "helps or hurts: that needs several seeds (`--seed`) and longer fine-tuning (`--finetune_overrides`); "
              "docs/pretraining_results.md has such comparisons."]
    return lines


def _scans(data: dict) -> str:
    """Which scans a pre-training saw: a split of the task's data set, or MultiTalent's labelled data sets."""
    if "datasets" in data:
        return "the training cases of the labelled data sets " + ", ".join(data["datasets"])
    return f"{data.get('splits')} of its data set"


def _sample_size(settings: dict) -> str:
    """What a pre-training method trains on: a patch, or VoCo's crops."""
    if "crop_size" in settings:
        return f"crops {settings['crop_size']}"
    return f"patch {settings.get('patch_size', '?')}"


def _with_interval(values: dict, key: str) -> str:
    value, interval = values.get(key), values.get(f"{key}_ci95")
    if value is None:
        return "n/a"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"
