"""Does a detector configuration learn? A bare training loop with a learning-curve table.

Trains a Retina U-Net straight from a preprocessed cache (no bundle, no checkpoints) and every
``--eval_every`` iterations detects on the validation cases and on a few training cases, so one run
tells apart "does not learn at all" (training AP stays 0), "learns but does not generalise" and
"learns". Used to diagnose the quick configuration (docs/experiments/lung_quick_detector.md).

    python -m tools.make_dataset lung_ct --out /tmp/lung_ct
    python -m tools.benchmarks.learning_probe --datalist /tmp/lung_ct/datalist.json --cache_dir /tmp/probe_cache \\
        --spacing 1.5 --iterations 800 --eval_every 200

Columns: iteration, mean training losses since the last row, AP@IoU 0.1 over the classes (``AP``),
class-agnostic AP and AR@0.1 (every box labelled "object") and the mean top score per scan, on the
validation split and on the first ``--train_cases`` training cases. Detections are kept down to a
score of 0.001 so that a ranking exists even before scores pass the bundles' thresholds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from shared.data.dataset import DetectionPatchDataset, ValidationCaseDataset, collate_detection
from shared.data.plan import plan_dataset
from shared.data.transforms_chains import preprocessing_chain, training_chain
from shared.detectors.retina_unet import RetinaUNetDetector
from shared.networks.retina_unet import RetinaUNetNetwork
from shared.detectors.planning import plan_retina_unet
from shared.engines.detection_setup import prepare_detection_data
from shared.engines.validation import predict_cases
from shared.inference.inferer import SlidingWindowDetectionInferer
from shared.engines.schedule import learning_rate_at, set_learning_rate
from shared.losses.classification import FocalClassificationLoss, HardNegativeBCELoss
from shared.metrics.ignite import DetectionMetrics
from tools._cli import run_cli
from tools.benchmarks._probe import spacing_and_patch

AP, AR = "AP_IoU_0.10_MaxDet_100", "AR_IoU_0.10_MaxDet_100"
CLASSIFICATION_LOSSES = {"focal": FocalClassificationLoss, "hard_negative_bce": HardNegativeBCELoss}


def score_cases(detector: RetinaUNetDetector, dataset: ValidationCaseDataset, class_names: Sequence[str],
                patch_size: Sequence[int]) -> dict[str, float]:
    """AP over the classes, class-agnostic AP/AR at IoU 0.1 and the mean top score of the cases."""
    by_class, agnostic, top = DetectionMetrics(list(class_names)), DetectionMetrics(["object"]), []
    inference = {"score_threshold": 1e-3, "batch_size": 2}
    for found, target in predict_cases(detector, dataset, SlidingWindowDetectionInferer(patch_size, inference)):
        by_class.update(([found], [target]))
        agnostic.update(([{**found, "labels": torch.zeros_like(found["labels"])}],
                         [{**target, "labels": torch.zeros_like(target["labels"])}]))
        top.append(float(found["scores"].max()) if len(found["scores"]) else 0.0)
    classes, objects = by_class.compute(), agnostic.compute()
    return {"AP": classes[AP], "AP_any": objects[AP], "AR_any": objects[AR], "top_score": float(np.mean(top))}


def main(datalist: str, cache_dir: str, spacing: float | str | Sequence[float] = 1.5,
         patch_size: int | Sequence[int] = 48,
         iterations: int = 800, eval_every: int = 200, batch_size: int = 2, optimizer: str = "adamw",
         learning_rate: float = 1e-3, lr_warmup_iterations: int = 20, foreground_fraction: float = 0.5,
         augment: bool = True, encoder: str = "resenc", preset: str = "small", decoder_channels: int = 32,
         detection_strides: Sequence[int] = (4, 8, 16), classification: str = "focal", train_cases: int = 6,
         seed: int = 0) -> None:
    """Train and print the learning-curve table (see the module docstring).

    ``classification``: ``"focal"`` (the bundles' default) or ``"hard_negative_bce"`` (nnDetection's BCE on
    all positives and the hardest negatives).
    """
    if classification not in CLASSIFICATION_LOSSES:
        raise ValueError(f"classification must be one of {sorted(CLASSIFICATION_LOSSES)}, got {classification!r}")
    torch.manual_seed(seed)
    spacing, patch = spacing_and_patch(spacing, patch_size)
    plan = plan_dataset(datalist, cache_dir, spacing=spacing)
    data = prepare_detection_data(datalist, cache_dir, f"{cache_dir}/probe", preprocessing=preprocessing_chain(plan),
                                  plan=plan, plan_detector=plan_retina_unet, **_channels_and_classes(datalist),
                                  patch_size=patch, detection_strides=list(detection_strides))
    network = RetinaUNetNetwork(len(data.plan["channels"]), len(data.class_names),
                                encoder={"name": encoder, "preset": preset}, decoder_channels=decoder_channels,
                                detection_strides=list(detection_strides))
    detector = RetinaUNetDetector(network, anchor_sizes=data.anchor_sizes, score_threshold=1e-3,
                                  classification_loss=CLASSIFICATION_LOSSES[classification]())
    chain = training_chain(patch, batch_size=batch_size, foreground_fraction=foreground_fraction, augment=augment)
    samples = DetectionPatchDataset(data.cache_dir, data.train_cases, chain, iterations_per_epoch=iterations,
                                    batch_size=batch_size, seed=seed)
    if optimizer == "adamw":
        optim = torch.optim.AdamW(detector.parameters(), lr=learning_rate, weight_decay=1e-4)
    else:
        optim = torch.optim.SGD(detector.parameters(), lr=learning_rate, momentum=0.9, nesterov=True,
                                weight_decay=3e-5)
    validation = ValidationCaseDataset(data.cache_dir, data.validation_cases)
    training = ValidationCaseDataset(data.cache_dir, data.train_cases[:train_cases])
    print(f"anchors {data.anchor_sizes}; {len(data.train_cases)} training / {len(data.validation_cases)} "
          f"validation cases; {optimizer} lr {learning_rate}; {classification} classification")
    print("| iteration | seconds | classification | box L1 | GIoU | segmentation | val AP | val AP (any) | "
          "val AR (any) | val top score | train AP (any) | train AR (any) |")
    print("|---" * 12 + "|")
    sums, start = {}, time.perf_counter()
    loader = torch.utils.data.DataLoader(samples, batch_size=batch_size, collate_fn=collate_detection)
    for iteration, batch in enumerate(loader, start=1):
        set_learning_rate(optim, learning_rate_at(iteration - 1, base_lr=learning_rate, total_iterations=iterations,
                                                  lr_warmup_iterations=lr_warmup_iterations))
        losses = detector(batch["image"], batch)
        optim.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(detector.parameters(), 12.0)
        optim.step()
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        if iteration % eval_every == 0 or iteration == iterations:
            seconds = time.perf_counter() - start
            detector.eval()
            val = score_cases(detector, validation, data.class_names, patch)
            train = score_cases(detector, training, data.class_names, patch)
            detector.train()
            count = eval_every if iteration % eval_every == 0 else iteration % eval_every
            mean = {name: value / count for name, value in sums.items()}
            print(f"| {iteration} | {seconds:.0f} | {mean.get('classification', 0):.3f} | {mean.get('box_l1', 0):.3f} "
                  f"| {mean.get('box_giou', 0):.3f} | {mean.get('segmentation', 0):.3f} | {val['AP']:.3f} | "
                  f"{val['AP_any']:.3f} | {val['AR_any']:.3f} | {val['top_score']:.3f} | {train['AP_any']:.3f} | "
                  f"{train['AR_any']:.3f} |", flush=True)
            sums = {}


def _channels_and_classes(datalist: str) -> dict[str, int]:
    """Channel and class counts of a datalist written by ``tools.make_dataset``."""
    content = json.loads(Path(datalist).read_text())
    return {"in_channels": len(content.get("channels", ["image"])), "num_classes": len(content["classes"])}


if __name__ == "__main__":
    run_cli(main)
