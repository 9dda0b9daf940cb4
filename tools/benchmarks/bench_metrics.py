"""Speed of the evaluation at PN9 scale, ours against MONAI's ``matching_batch`` + ``COCOMetric``.

``python -m tools.benchmarks.bench_metrics [--images 2091] [--monai_images 2091] [--models 8] [--draws 1000]``

A synthetic test set: ``images`` images with about 20 objects (Poisson) and 100 detections each, one
class; a detection is a jittered object with some probability, otherwise a random box. MONAI matches with
our float64 IoU function (so that both sides see identical IoUs) on the first ``monai_images`` images and
both compute the same metrics there. Then ``models`` prediction sets are ranked over ``draws`` bootstrap
draws. Prints a markdown table.
"""

from __future__ import annotations

import logging
import time

import fire
import numpy as np

from shared.boxes.ops import pairwise_iou_3d
from shared.metrics.bootstrap import bootstrap_ranking
from shared.metrics.detection_metrics import IOU_RANGE, compute_detection_metrics, matching_thresholds
from shared.metrics.matching import match_detections

IOU_LIST = (0.1, 0.5, 0.75)


def synthetic_set(images: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ground truth: per image about 20 xyzxyz boxes (3-30 mm) in a 300 mm cube, and their labels."""
    generator = np.random.default_rng(seed)
    boxes, labels = [], []
    for _ in range(images):
        count = int(generator.poisson(20))
        corner = generator.uniform(0, 300, (count, 3))
        boxes.append(np.concatenate([corner, corner + generator.uniform(3, 30, (count, 3))], axis=1))
        labels.append(np.zeros(count, dtype=np.int64))
    return boxes, labels


def synthetic_predictions(truth: list[np.ndarray], recall: float, seed: int, per_image: int = 100):
    """100 detections per image: jittered objects (found with probability ``recall``) and random boxes."""
    generator = np.random.default_rng(seed)
    boxes, labels, scores = [], [], []
    for objects in truth:
        found = objects[generator.uniform(size=len(objects)) < recall][:per_image]
        jitter = found + generator.normal(0, 2.0, found.shape)
        jitter[:, 3:] = np.maximum(jitter[:, 3:], jitter[:, :3] + 1.0)
        corner = generator.uniform(0, 300, (per_image - len(found), 3))
        noise = np.concatenate([corner, corner + generator.uniform(3, 30, corner.shape)], axis=1)
        boxes.append(np.concatenate([jitter, noise]))
        scores.append(np.concatenate([generator.beta(4, 2, len(found)), generator.beta(2, 4, len(noise))]))
        labels.append(np.zeros(per_image, dtype=np.int64))
    return boxes, labels, scores


def _ours(predictions, truth, labels):
    start = time.perf_counter()
    record = match_detections(*predictions, truth, labels, num_classes=1,
                              iou_thresholds=matching_thresholds(IOU_LIST, IOU_RANGE, (0.1,)))
    matched = time.perf_counter()
    metrics = compute_detection_metrics(record, ["nodule"], iou_list=IOU_LIST)
    return record, metrics, matched - start, time.perf_counter() - matched


def _monai(predictions, truth, labels):
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch

    logging.getLogger().setLevel(logging.ERROR)
    metric = COCOMetric(classes=["nodule"], iou_list=IOU_LIST, max_detection=[100], verbose=False)
    start = time.perf_counter()
    results = matching_batch(pairwise_iou_3d, metric.iou_thresholds, *predictions, truth, labels, max_detections=100)
    matched = time.perf_counter()
    values, _ = metric(results)
    return values, matched - start, time.perf_counter() - matched


def main(images: int = 2091, monai_images: int | None = None, models: int = 8, draws: int = 1000, seed: int = 0):
    """Run the benchmark and print a markdown table (see the module docstring)."""
    monai_images = images if monai_images is None else monai_images
    truth, labels = synthetic_set(images, seed)
    predictions = synthetic_predictions(truth, 0.7, seed + 1)
    record, metrics, match_seconds, metric_seconds = _ours(predictions, truth, labels)
    subset = [part[:monai_images] for part in predictions]
    _, subset_metrics, subset_match, subset_metric = _ours(subset, truth[:monai_images], labels[:monai_images])
    reference, monai_match, monai_metric = _monai(subset, truth[:monai_images], labels[:monai_images])
    shared_keys = [k for k in reference if k.startswith(("AP_", "mAP_"))]
    ap_difference = max(abs(subset_metrics[k] - reference[k]) for k in shared_keys)
    ar_difference = max(abs(subset_metrics[k] - reference[k]) for k in reference if k.startswith("AR_"))
    records = [record] + [
        match_detections(*synthetic_predictions(truth, 0.5 + 0.05 * m, seed + 10 + m), truth, labels, num_classes=1,
                         iou_thresholds=(0.1,))
        for m in range(1, models)
    ]
    start = time.perf_counter()
    ranking = bootstrap_ranking(records, ["nodule"], "AP_IoU_0.10_MaxDet_100", draws=draws, seed=seed)
    ranking_seconds = time.perf_counter() - start
    rows = [
        ("test set", f"{images} images, {record.ground_truth_count.sum()} objects, "
                     f"{record.detection_score.size} detections"),
        ("ours: matching (10 IoU thresholds)", f"{match_seconds:.2f} s"),
        ("ours: all metrics (AP/AR/mAP/mAR/FROC)", f"{metric_seconds:.2f} s"),
        (f"MONAI vs ours on {monai_images} images: matching", f"{monai_match:.2f} s vs {subset_match:.2f} s"),
        (f"MONAI vs ours on {monai_images} images: COCOMetric", f"{monai_metric:.2f} s vs {subset_metric:.2f} s"),
        ("speed-up (matching + metrics)", f"{(monai_match + monai_metric) / (subset_match + subset_metric):.1f}x"),
        ("largest AP/mAP difference to MONAI", f"{ap_difference:.1e}"),
        ("largest AR difference to MONAI (its float32 recall)", f"{ar_difference:.1e}"),
        (f"AP_IoU_0.10_MaxDet_100 (ours, {images} images)", f"{metrics['AP_IoU_0.10_MaxDet_100']:.4f}"),
        (f"bootstrap ranking: {models} models x {draws} draws", f"{ranking_seconds:.1f} s"),
        ("mean ranks", ", ".join(f"{r:.2f}" for r in ranking.mean_rank)),
    ]
    print("| quantity | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    fire.Fire(main)
