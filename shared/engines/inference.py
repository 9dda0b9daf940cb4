"""Detection on new scans, end to end: read → preprocess like training → sliding window → boxes in
world millimetres → files.

Per scan it writes ``<case>.json`` (the bundle output format: ``{"image", "box" (world mm, cccwhd),
"label", "label_scores"}``) and, if asked, ``<case>_boxes.nii.gz`` (a label map of the boxes on the
scan's own grid, value = class + 1, for viewers). Over all scans it writes ``predictions.json`` (the
list that ``tools.evaluate`` reads) and ``candidates.csv`` (LUNA16 style). Every file is written
atomically, and a scan that fails to read stops the run before ``predictions.json`` is replaced.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from shared.boxes.convention import boxes_voxel_to_world, boxes_world_to_voxel
from shared.boxes.rasterize import rasterize_boxes
from shared.data.preprocess import preprocess_volume
from shared.data.validate import case_id
from shared.inference.sliding_window import predict_volume
from shared.io.atomic import write_json
from shared.io.datalist import read_split
from shared.io.errors import InputError
from shared.io.images import Volume, load_volume, save_nifti
from shared.io.luna16 import export_luna16_candidates

logger = logging.getLogger(__name__)

POSTPROCESSING_FILE = "postprocessing.json"


class ScanPredictor:
    """Boxes in world millimetres for whole scans.

    Args:
        models: a detector, or a list of them (fold ensemble), in eval mode or not.
        plan: the preprocessing plan of the training cache (``plans.json``).
        patch_size: sliding-window tile size.
        inference: keyword arguments of :func:`shared.inference.sliding_window.predict_volume`.
        device: where the networks run.
    """

    def __init__(
        self,
        models: nn.Module | Sequence[nn.Module],
        plan: dict[str, Any],
        *,
        patch_size: Sequence[int],
        inference: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ):
        self.models = [models] if isinstance(models, nn.Module) else list(models)
        self.plan, self.patch_size = plan, tuple(int(size) for size in patch_size)
        self.inference = dict(inference or {})
        self.device = torch.device(device)
        self.channels = len(plan["channels"])
        for model in self.models:
            model.to(self.device).eval()

    @torch.no_grad()
    def predict_volume(self, volume: Volume) -> dict[str, np.ndarray]:
        """``{"boxes": (M, 6) world cccwhd, "labels": (M,), "scores": (M,)}`` for a loaded scan."""
        if volume.array.shape[0] != self.channels:
            raise InputError(volume.sources[0], f"the model expects {self.channels} channel(s), "
                                                f"the scan has {volume.array.shape[0]}")
        array, affine = preprocess_volume(volume, self.plan)
        image = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        result = predict_volume(self.models, image, patch_size=self.patch_size, **self.inference)
        return {
            "boxes": boxes_voxel_to_world(result["boxes"].cpu().numpy(), affine),
            "labels": result["labels"].cpu().numpy().astype(np.int64),
            "scores": result["scores"].cpu().numpy().astype(np.float64),
        }

    def predict_scan(self, image: str | Sequence[str]) -> dict[str, Any]:
        """One scan (a file or one file per channel) → one entry of the bundle output format."""
        volume = load_volume(image)
        found = self.predict_volume(volume)
        return {"image": image, "box": found["boxes"].tolist(), "label": found["labels"].tolist(),
                "label_scores": found["scores"].tolist()}


def predict_scans(
    predictor: ScanPredictor,
    images: Sequence[str | Sequence[str]],
    out_dir: str | os.PathLike,
    *,
    write_box_maps: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Predict every scan, then write the per-scan and combined outputs into ``out_dir``.

    Nothing is written until every scan is predicted, so a scan that fails (unreadable, not 3-D, the
    wrong channel count) leaves no outputs of the scans before it.
    """
    out_dir = Path(out_dir)
    predictions = [predictor.predict_scan(image)
                   for image in tqdm(images, desc="inference", unit="scan", disable=not progress)]
    for image, entry in zip(images, predictions):
        name = case_id(image)
        write_json(out_dir / f"{name}.json", entry)
        if write_box_maps:
            write_box_map(out_dir / f"{name}_boxes.nii.gz", entry, image)
    write_json(out_dir / "predictions.json", predictions)
    export_luna16_candidates(out_dir / "predictions.json", out_dir / "candidates.csv")
    logger.info("wrote %d predictions to %s", len(predictions), out_dir)
    return predictions


def split_images(datalist: str | os.PathLike, split: str) -> list[str | list[str]]:
    """The scans of a datalist split, as absolute paths (one per channel for multi-channel scans)."""
    return [entry["image"] for entry in read_split(datalist, split)]


def tuned_settings(model_dir: str | os.PathLike, defaults: dict[str, Any]) -> dict[str, Any]:
    """Inference settings: ``defaults`` updated by ``model_dir/postprocessing.json`` when the sweep
    (``python -m tools.sweep_postprocessing``) wrote one."""
    path = Path(model_dir) / POSTPROCESSING_FILE
    if not path.is_file():
        return dict(defaults)
    tuned = json.loads(path.read_text())["settings"]
    logger.info("post-processing settings tuned on validation: %s", tuned)
    return {**defaults, **tuned}


def write_box_map(path: str | os.PathLike, entry: dict[str, Any], image: str | Sequence[str]) -> None:
    """A NIfTI label map of the predicted boxes (class + 1) on the scan's own grid."""
    volume = load_volume(image)
    boxes = boxes_world_to_voxel(entry["box"], volume.affine)
    labels = np.asarray(entry["label"], dtype=np.int64)
    # rasterize_boxes paints larger boxes first (a small one inside stays visible); among equal sizes
    # the later row wins, so this order puts the more confident box on top only then
    order = np.argsort(entry["label_scores"])
    label_map = rasterize_boxes(boxes[order], volume.array.shape[1:], ids=labels[order] + 1, dtype=np.int64)
    save_nifti(path, label_map.astype(np.uint8), volume.affine)


def predict_and_evaluate(predictor: ScanPredictor, datalist: str | os.PathLike, split: str,
                         out_dir: str | os.PathLike, *, bootstrap: int = 1000, **kwargs) -> dict[str, float]:
    """Predict a labelled split, then evaluate it (metrics.json, report.md, plots in ``out_dir``)."""
    from shared.metrics.evaluation import evaluate_detections

    out_dir = Path(out_dir)
    predict_scans(predictor, split_images(datalist, split), out_dir / "predictions", **kwargs)
    return evaluate_detections(out_dir / "predictions" / "predictions.json", datalist, out_dir, split=split,
                               bootstrap=bootstrap)
