"""Detection on new scans, end to end: read → preprocess like training → sliding window → boxes in
world millimetres → files.

Per scan it writes ``<case>.json`` (the bundle output format: ``{"image", "box" (world mm, cccwhd),
"label", "label_scores"}``, plus ``"warnings"`` when the scan was compared with the training domain,
:mod:`shared.inference.domain`) and, if asked, ``<case>_boxes.nii.gz`` (a label map of the boxes on the
scan's own grid, value = class + 1, for viewers). Over all scans it writes ``predictions.json`` (the
list that ``tools.evaluate`` reads) and ``candidates.csv`` (LUNA16 style). Every file is written
atomically, and a scan that fails to read stops the run before ``predictions.json`` is replaced.

Two ways in, one writer: :class:`ScanEvaluator` is the bundles' ``evaluator`` (MONAI's workflow
property: a ``monai.engines`` evaluator over the ``dataset`` of preprocessed scans, with the ``inferer``
and the ``postprocessing`` to world millimetres), whose handlers :class:`PredictionWriter` and
:class:`EvaluationReport` write the files; :class:`ScanPredictor` with :func:`predict_scans` does the
same in plain Python for tools and benchmarks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from torch import nn
from tqdm import tqdm

from shared.boxes.convention import boxes_voxel_to_world, boxes_world_to_voxel
from shared.boxes.rasterize import rasterize_boxes
from shared.data.preprocess import preprocess_volume
from shared.data.validate import case_id
from shared.engines.evaluator import CaseEvaluator
from shared.inference.domain import check_scan
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
        domain: the model plan's ``"domain"`` (:mod:`shared.inference.domain`): each scan is compared with
            it and its entry gets ``"warnings"``; None compares nothing.
    """

    def __init__(
        self,
        models: nn.Module | Sequence[nn.Module],
        plan: dict[str, Any],
        *,
        patch_size: Sequence[int],
        inference: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        domain: dict[str, Any] | None = None,
    ):
        self.domain = domain
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
        entry = {"image": image, "box": found["boxes"].tolist(), "label": found["labels"].tolist(),
                 "label_scores": found["scores"].tolist()}
        if self.domain is not None:
            entry["warnings"] = check_scan(volume.array, volume.affine, self.domain, source=volume.sources[0])
        return entry


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
    predictions = [predictor.predict_scan(image)
                   for image in tqdm(images, desc="inference", unit="scan", disable=not progress)]
    write_predictions(predictions, out_dir, write_box_maps=write_box_maps)
    return predictions


def write_predictions(predictions: Sequence[dict[str, Any]], out_dir: str | os.PathLike, *,
                      write_box_maps: bool = False) -> None:
    """Per scan ``<case>.json`` (and ``<case>_boxes.nii.gz``), then ``predictions.json`` and ``candidates.csv``.

    Args:
        predictions: entries of the bundle output format, ``{"image", "box" (world cccwhd), "label",
            "label_scores"}``, one per scan.
    """
    out_dir = Path(out_dir)
    for entry in predictions:
        name = case_id(entry["image"])
        write_json(out_dir / f"{name}.json", entry)
        if write_box_maps:
            write_box_map(out_dir / f"{name}_boxes.nii.gz", entry, entry["image"])
    write_json(out_dir / "predictions.json", list(predictions))
    export_luna16_candidates(out_dir / "predictions.json", out_dir / "candidates.csv")
    logger.info("wrote %d predictions to %s", len(predictions), out_dir)


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


def single_case(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``collate_fn`` of the inference loader: whole scans differ in size, so a batch is one case as is."""
    if len(batch) != 1:
        raise ValueError(f"inference loads one whole scan per batch, got {len(batch)}: set batch_size=1")
    return batch[0]


class ScanEvaluator(CaseEvaluator):
    """The bundles' inference ``evaluator``: each preprocessed scan through the sliding-window inferer.

    A thin :class:`monai.engines.SupervisedEvaluator` (its arguments: ``device``, ``val_data_loader``,
    ``network``, ``inferer``, ``postprocessing``, ``val_handlers``, ``key_val_metric``…) whose
    iteration takes one case (the ``dataset``'s dict: ``image`` (C, X, Y, Z) preprocessed, its
    ``affine`` and the keys the transforms added), runs ``inferer(image (1, C, X, Y, Z), network)``
    and outputs the case's keys without the image plus the inferer's ``boxes`` (N, 6) xyzxyz voxel,
    ``scores`` (N,) and ``labels`` (N,). ``postprocessing`` (boxes to world millimetres) then runs on
    that dict, and the handlers (:class:`PredictionWriter`) write it. ``network`` may be a list of
    detectors (a fold ensemble): the inferer gets the list. ``inferer_keys`` names case keys the
    inferer also gets, as keyword arguments (e.g. ``dataset`` for a network with one stem per data set).
    """

    def __init__(self, device: torch.device | str, val_data_loader: Any, network: nn.Module | Sequence[nn.Module],
                 inferer_keys: Sequence[str] = (), **kwargs: Any):
        networks = network if isinstance(network, nn.Module) else nn.ModuleList(list(network))
        super().__init__(device=torch.device(device), val_data_loader=val_data_loader, network=networks,
                         decollate=False, **kwargs)
        self.network.to(self.state.device)
        self.inferer_keys = list(inferer_keys)

    def _iteration(self, engine: ScanEvaluator, batchdata: dict[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image = torch.as_tensor(np.ascontiguousarray(batchdata["image"]) if isinstance(batchdata["image"], np.ndarray)
                                else batchdata["image"])
        image = image.to(engine.state.device, dtype=torch.float32)[None]
        network = list(engine.network) if isinstance(engine.network, nn.ModuleList) else engine.network
        engine.network.eval()
        with torch.no_grad():
            found = engine.inferer(image, network, **{key: batchdata[key] for key in engine.inferer_keys})
        engine.state.output = {**{key: value for key, value in batchdata.items() if key != "image"}, **found}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class PredictionWriter:
    """Handler: the evaluator's per-scan outputs as the bundle's files (see :func:`write_predictions`).

    Collects one entry per iteration (the output after ``postprocessing``: ``boxes_key`` world
    ``cccwhd`` mm, ``labels_key``, ``scores_key``, and the scan's files under ``sources_key``) and writes
    every file when the run completes, so a scan that fails leaves no outputs of the scans before it.

    Args:
        output_dir: where the files go.
        write_box_maps: also write ``<case>_boxes.nii.gz`` label maps.
        warnings_key: where the training-domain check
            (:class:`shared.inference.domain.CheckTrainingDomaind`) put its problems; written as the
            entry's ``"warnings"`` (an empty list: checked, in domain), left out when it did not run.
    """

    def __init__(self, output_dir: str | os.PathLike, *, write_box_maps: bool = False, boxes_key: str = "boxes",
                 labels_key: str = "labels", scores_key: str = "scores", sources_key: str = "sources",
                 warnings_key: str = "domain_warnings"):
        self.output_dir, self.write_box_maps = Path(output_dir), write_box_maps
        self.warnings_key = warnings_key
        self.keys = (boxes_key, labels_key, scores_key, sources_key)
        self.predictions: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.predictions = []

    def _collect(self, engine: Engine) -> None:
        boxes_key, labels_key, scores_key, sources_key = self.keys
        output = engine.state.output
        sources = list(output[sources_key]) if not isinstance(output[sources_key], str) else [output[sources_key]]
        self.predictions.append({
            "image": sources[0] if len(sources) == 1 else sources,
            "box": _array(output[boxes_key], np.float64).reshape(-1, 6).tolist(),
            "label": _array(output[labels_key], np.int64).tolist(),
            "label_scores": _array(output[scores_key], np.float64).tolist(),
        })
        if self.warnings_key in output:  # the training-domain check ran (shared.inference.domain)
            self.predictions[-1]["warnings"] = list(output[self.warnings_key])

    def _write(self, engine: Engine) -> None:
        write_predictions(self.predictions, self.output_dir, write_box_maps=self.write_box_maps)


class EvaluationReport:
    """Handler: when the run completes, score ``predictions.json`` against the datalist split (metrics.json,
    report.md, plots in ``output_dir``; :func:`shared.metrics.evaluation.evaluate_detections`)."""

    def __init__(self, predictions: str | os.PathLike, datalist: str | os.PathLike, split: str,
                 output_dir: str | os.PathLike, *, bootstrap: int = 1000):
        self.predictions, self.datalist, self.split = Path(predictions), datalist, split
        self.output_dir, self.bootstrap = Path(output_dir), bootstrap
        self.metrics: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self._evaluate)

    def _evaluate(self, engine: Engine) -> None:
        from shared.metrics.evaluation import evaluate_detections

        self.metrics = evaluate_detections(self.predictions, self.datalist, self.output_dir, split=self.split,
                                           bootstrap=self.bootstrap)


def _array(value: Any, dtype: type) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)
