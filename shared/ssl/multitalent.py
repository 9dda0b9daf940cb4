"""Supervised MultiTalent pre-training: the network with its loss, the trainer step and the encoder export.

:class:`MultiTalent` pairs :class:`shared.networks.multitalent.MultiTalentNetwork` with
:class:`shared.losses.multitalent.MultiTalentLoss`; its forward on a batch returns the losses and each
data set's Dice, like the other pre-training methods of this package. A batch mixes data sets: images
are padded with zero channels to the widest data set (:func:`pad_channels`) and every sample carries its
data set's name under ``"dataset"``.

The export writes our encoder format (:mod:`shared.checkpoints.manifest`): ``encoder.pt`` with one
stem in the encoder's own stem keys (``main_stem``, the first data set by default), ``stems.pt`` with
every data set's stem, and a manifest whose ``stems.ids`` maps each data set id to its channel count,
so that fine-tuning takes a stem by id (``stem_id``) or by channel count (``stem="matching"``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.config import KeysCollection
from monai.inferers import Inferer, SlidingWindowInferer
from monai.transforms import MapTransform
from torch import nn

from shared.checkpoints.manifest import PretrainedEncoder, StateDict, new_manifest, read_manifest, save_pretrained
from shared.data.validate import case_id
from shared.io.atomic import write_json
from shared.io.errors import InputError
from shared.io.images import save_nifti
from shared.losses.multitalent import MultiTalentLoss, deep_supervision_weights, downsample_labels, task_dice
from shared.networks.multitalent import MultiTalentNetwork, read_tasks

METHOD = "multitalent"


def pad_channels(image: np.ndarray | torch.Tensor, channels: int) -> np.ndarray | torch.Tensor:
    """Zero channels appended to (C, X, Y, Z) up to ``channels``, so data sets of any width batch together."""
    missing = channels - image.shape[0]
    if missing < 0:
        raise ValueError(f"image has {image.shape[0]} channels, more than the {channels} it is padded to")
    if missing == 0:
        return image
    if isinstance(image, torch.Tensor):
        return torch.cat([image, image.new_zeros((missing, *image.shape[1:]))])
    return np.concatenate([image, np.zeros((missing, *image.shape[1:]), dtype=image.dtype)])


class PadChannelsd(MapTransform):
    """Dictionary transform: :func:`pad_channels` on ``keys`` up to ``channels`` (the widest data set's count).

    Args:
        keys: the image keys.
        channels: channels after padding.
    """

    def __init__(self, keys: KeysCollection, channels: int, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.channels = int(channels)

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        sample = dict(data)
        for key in self.key_iterator(sample):
            sample[key] = pad_channels(sample[key], self.channels)
        return sample


class MultiTalent(nn.Module):
    """MultiTalent pre-training: per-data-set stems, shared U-Net, loss on each data set's own classes.

    Args:
        tasks: the data sets, ``[{"name", "in_channels", "classes", "kind"?, "regions"?}, ...]``
            (:class:`shared.networks.multitalent.SegmentationTask`), e.g. from
            :func:`shared.io.multi_datalist.read_multi_datalist`'s ``tasks``.
        encoder_spec: the encoder (ResEnc-L by default; ``{"name": "plain", ...}`` for Retina U-Net's).
        decoder_convs_per_stage: conv blocks per decoder stage.
        deep_supervision: also score the coarser decoder outputs against nearest-downsampled labels,
            weighted as nnU-Net does (:func:`shared.losses.multitalent.deep_supervision_weights`).
        dice_weight, ce_weight: weights of the loss terms.
    """

    def __init__(self, tasks: list[dict[str, Any]], *, encoder_spec: dict[str, Any] | None = None,
                 decoder_convs_per_stage: int = 1, deep_supervision: bool = False, dice_weight: float = 1.0,
                 ce_weight: float = 1.0):
        super().__init__()
        self.network = MultiTalentNetwork(tasks, encoder_spec=encoder_spec,
                                          decoder_convs_per_stage=decoder_convs_per_stage,
                                          deep_supervision=deep_supervision)
        self.loss = MultiTalentLoss(self.network.tasks, dice_weight=dice_weight, ce_weight=ce_weight)

    @property
    def encoder(self) -> nn.Module:
        """The shared encoder (without stem)."""
        return self.network.encoder

    def forward(self, images: torch.Tensor, labels: torch.Tensor | Mapping[str, Any], datasets: Any = None
                ) -> dict[str, torch.Tensor]:
        """Args:
            images: (B, C_max, X, Y, Z).
            labels: (B, 1, X, Y, Z) integer maps in each sample's own labels, or the trainer's targets
                ``{"label", "dataset"}`` (:func:`prepare_multitalent_batch`).
            datasets: per sample its data set name (or index); inside ``labels`` when that is a mapping.

        Returns:
            ``{"loss", "loss/<data set>", "dice/<data set>"}`` for the data sets in the batch; the
            per-data-set entries are the finest output's.
        """
        if isinstance(labels, Mapping):  # the trainer passes one target argument
            labels, datasets = labels["label"], labels["dataset"]
        indices = self.network.dataset_indices(datasets, images.shape[0])
        outputs = self.network(images, indices)
        losses = self.loss(outputs["seg_logits"], labels, indices)
        coarser = outputs.get("deep_supervision", [])
        if coarser:
            weights = deep_supervision_weights(1 + len(coarser))
            total = weights[0] * losses["loss"]
            for weight, logits in zip(weights[1:], coarser):
                if weight:
                    total = total + weight * self.loss(logits, downsample_labels(labels, logits.shape[2:]),
                                                       indices)["loss"]
            losses["loss"] = total
        return losses


def multitalent_forward(model: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Trainer step for :class:`MultiTalent`: a batch with ``"image"``, ``"label"`` and ``"dataset"``."""
    return model(batch["image"].to(device), batch["label"].to(device), batch["dataset"])


def prepare_multitalent_batch(batch: dict[str, Any], device: str | torch.device | None = None,
                              non_blocking: bool = False, **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """``LossDictTrainer``'s ``prepare_batch``: the images and the targets ``{"label", "dataset"}``.

    Shape:
        batch["image"]: (B, C_max, X, Y, Z) float; batch["label"]: (B, 1, X, Y, Z) integer; batch["dataset"]:
        B data set ids.
    """
    labels = torch.as_tensor(batch["label"]).to(device, dtype=torch.long, non_blocking=non_blocking)
    images = torch.as_tensor(batch["image"]).to(device, dtype=torch.float32, non_blocking=non_blocking)
    return images, {"label": labels, "dataset": list(batch["dataset"])}


class DatasetSegmenter(nn.Module):
    """One data set's segmentation network cut from a trained :class:`MultiTalent` (inference, export).

    Holds the MultiTalent network under the same key (``network.``), so the pre-training's ``model.pt``
    loads into it; a scan of that data set goes through its stem, and the output is its block of logits.

    Args:
        tasks, encoder_spec, decoder_convs_per_stage, deep_supervision: as the trained :class:`MultiTalent`.
        dataset: the data set (a ``softmax`` one: the output is its background and classes).

    Shape:
        (B, C_d, X, Y, Z) → (B, K_d + 1, X, Y, Z), C_d the data set's channels.
    """

    def __init__(self, tasks: list[dict[str, Any]], dataset: str, *, encoder_spec: dict[str, Any] | None = None,
                 decoder_convs_per_stage: int = 1, deep_supervision: bool = False):
        super().__init__()
        self.network = MultiTalentNetwork(tasks, encoder_spec=encoder_spec,
                                          decoder_convs_per_stage=decoder_convs_per_stage,
                                          deep_supervision=deep_supervision)
        if dataset not in self.network.task_names:
            raise ValueError(f"dataset {dataset!r}: not one of the network's data sets {self.network.task_names}")
        self.task = self.network.tasks[self.network.task_names.index(dataset)]
        if self.task.kind != "softmax":
            raise ValueError(f"dataset {dataset!r}: segmentation is written for softmax data sets, this one has "
                             f"{self.task.kind!r}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return dataset_logits(self.network, images, self.task.name)


def dataset_logits(network: MultiTalentNetwork, images: torch.Tensor, dataset: str) -> torch.Tensor:
    """A batch of one data set through its stem: that data set's block of the output logits.

    Shape:
        (B, C_d, X, Y, Z) → (B, task.out_channels, X, Y, Z).
    """
    padded = pad_channels(images.transpose(0, 1), network.max_in_channels).transpose(0, 1)
    logits = network(padded, [dataset] * images.shape[0])["seg_logits"]
    return logits[:, network.channel_slices[dataset]]


class MultiDatasetSegmenter(nn.Module):
    """The :class:`MultiTalent` being trained, seen as a segmenter of any of its data sets (validation).

    Shares the module's weights; ``forward(images, dataset)`` gives that data set's logits, so a
    sliding-window inferer can pass each scan's data set through (``ScanEvaluator``'s ``inferer_keys``).

    Args:
        model: the :class:`MultiTalent` module (not its DDP wrapper: validation runs on each rank alone).
    """

    def __init__(self, model: MultiTalent):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, dataset: str) -> torch.Tensor:
        return dataset_logits(self.model.network, images, dataset)


def validation_cases(collection: Mapping[str, Any], max_scans: int | None = None) -> list[dict[str, Any]]:
    """Every data set's ``validation`` entries (the first ``max_scans`` of each), with ``dataset`` added."""
    return [{**entry, "dataset": name} for name, spec in collection["datasets"].items()
            for entry in spec.get("validation", [])[:max_scans]]


class DatasetDice(Metric):
    """Validation metric: per data set, the mean over its scans of the scan's hard foreground Dice
    (:func:`shared.losses.multitalent.task_dice`: its classes present in the scan or the prediction).

    ``update`` takes one scan's ``(logits (1, C, X, Y, Z), label map, data set name)``, which ignite takes
    from the evaluator's output dict (``required_output_keys``). ``compute`` returns
    ``{"val/dice/<data set>": …, "val/dice": mean over the data sets}`` for the data sets that had a scan
    with something to score (``val/dice``, the key metric, is NaN without any); every rank validates
    every scan, so nothing is gathered.

    Args:
        tasks: the data sets (``[{"name", "classes", "kind"?, …}]``).
    """

    key_metric = "val/dice"
    required_output_keys = ("logits", "label", "dataset")

    def __init__(self, tasks: Sequence[Mapping[str, Any]], output_transform=lambda output: output):
        self.tasks = {task.name: task for task in read_tasks(tasks)}
        self._scores: dict[str, list[float]] = {}
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self._scores = {}

    def update(self, output: Sequence[Any]) -> None:
        logits, labels, dataset = output
        task = self.tasks[dataset]
        logits = torch.as_tensor(logits).detach().cpu()
        labels = torch.as_tensor(np.asarray(labels)).reshape(1, 1, *logits.shape[2:]).long()
        dice = float(task_dice(task, logits, labels))
        if not np.isnan(dice):
            self._scores.setdefault(task.name, []).append(dice)

    def compute(self) -> dict[str, float]:
        means = {f"val/dice/{name}": float(np.mean(scores)) for name, scores in self._scores.items()}
        return {**means, self.key_metric: float(np.mean(list(means.values()))) if means else float("nan")}


class SegmentationInferer(Inferer):
    """Sliding window over a whole scan, then the label map: ``{"segmentation": (B, 1, X, Y, Z)}`` (argmax),
    or with ``argmax=False`` the logits: ``{"logits": (B, C, X, Y, Z)}``.

    Args:
        patch_size: the window, a multiple of the encoder's coarsest stride.
        overlap: window overlap (Gaussian weighting, as nnU-Net).
        argmax: return the label map rather than the logits.
    """

    def __init__(self, patch_size: Sequence[int], *, overlap: float = 0.5, argmax: bool = True):
        super().__init__()
        self.window = SlidingWindowInferer(list(patch_size), sw_batch_size=1, overlap=overlap, mode="gaussian")
        self.argmax = bool(argmax)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        logits = self.window(inputs, network, *args, **kwargs)
        return {"segmentation": logits.argmax(1, keepdim=True)} if self.argmax else {"logits": logits}


class SegmentationWriter:
    """Handler: each scan's label map as ``<case>_segmentation.nii.gz`` (preprocessed grid) and, when the
    scan has a ``label``, its Dice per class; ``segmentations.json`` lists them when the run completes.

    Args:
        output_dir: where the files go.
        classes: the data set's class names (labels 1..K).
    """

    def __init__(self, output_dir: str | os.PathLike, classes: Sequence[str]):
        self.output_dir, self.classes = Path(output_dir), list(classes)
        self.results: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.results.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_case)
        engine.add_event_handler(Events.COMPLETED, lambda _: write_json(self.output_dir / "segmentations.json",
                                                                        self.results))

    def _write_case(self, engine: Engine) -> None:
        output = engine.state.output
        segmentation = torch.as_tensor(output["segmentation"])[0, 0].cpu().numpy().astype(np.uint8)
        case = case_id(output["sources"])
        path = save_nifti(self.output_dir / f"{case}_segmentation.nii.gz", segmentation, np.asarray(output["affine"]))
        result: dict[str, Any] = {"case": case, "file": str(path)}
        if output.get("label") is not None:
            label = np.asarray(output["label"]).reshape(segmentation.shape)
            result["dice"] = {name: class_dice(segmentation == index, label == index)
                              for index, name in enumerate(self.classes, start=1)}
        self.results.append(result)


def class_dice(predicted: np.ndarray, target: np.ndarray) -> float | None:
    """Dice of two binary maps; ``None`` when both are empty (nothing to score)."""
    total = int(predicted.sum()) + int(target.sum())
    return None if total == 0 else 2.0 * int((predicted & target).sum()) / total


def multitalent_encoder_weights(network: MultiTalentNetwork | MultiTalent, main_stem: str | None = None
                                ) -> tuple[StateDict, dict[str, StateDict]]:
    """The encoder's state dict with ``main_stem``'s stem in its stem keys, and every stem by data set id.

    Args:
        network: the network (or the pre-training module holding it).
        main_stem: the data set whose stem goes into the encoder's keys (default: the first task).

    Returns:
        ``(encoder state dict, {data set id: stem state dict})``, stem keys relative to the stem.
    """
    network = getattr(network, "network", network)
    main_stem = network.task_names[0] if main_stem is None else main_stem
    if main_stem not in network.stems:
        raise ValueError(f"main_stem {main_stem!r}: not a data set of the network ({network.task_names})")
    prefix = network.encoder_stem_path + "."
    state = {key: value for key, value in network.encoder.state_dict().items()}
    state.update({prefix + key: value for key, value in network.stems[main_stem].state_dict().items()})
    stems = {name: dict(stem.state_dict()) for name, stem in network.stems.items()}
    return state, stems


def export_multitalent_encoder(
    network: MultiTalentNetwork | MultiTalent,
    out_dir: str | os.PathLike,
    *,
    architecture: dict[str, Any] | None = None,
    main_stem: str | None = None,
    modality: str | list[str] | None = None,
    spacing: list[float] | tuple[float, ...] | None = None,
    normalization: Any = "zscore",
    method_settings: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> Path:
    """Writes ``encoder.pt``, ``stems.pt`` and ``encoder.json`` of a MultiTalent network.

    Args:
        network: the trained network (or :class:`MultiTalent`), not wrapped in DDP.
        out_dir: output folder.
        architecture: the encoder spec the network was built with (default: the network's own).
        main_stem: the data set whose stem is the encoder's own (its channels are the manifest's
            ``in_channels``); the first by default.
        modality, spacing, normalization: what the inputs were.
        method_settings: schedule, patch size... (the tasks are added).
        data: what it saw (the tasks' classes are added under ``"datasets"``).

    Returns:
        The manifest's path (written by rank 0 only; the other ranks of a distributed run return it too).
    """
    if idist.get_rank() != 0:
        return Path(out_dir) / "encoder.json"
    bare = getattr(network, "network", network)
    architecture = bare.encoder_spec if architecture is None else architecture
    state, stems = multitalent_encoder_weights(bare, main_stem)
    main_stem = main_stem or bare.task_names[0]
    main_task = bare.tasks[bare.task_names.index(main_stem)]
    datasets = {task.name: {"in_channels": task.in_channels, "classes": list(task.classes), "kind": task.kind,
                            **({} if task.regions is None else {"regions": [list(r) for r in task.regions]})}
                for task in bare.tasks}
    manifest = new_manifest(
        architecture=architecture, in_channels=main_task.in_channels, modality=modality, spacing=spacing,
        normalization=normalization, method=METHOD,
        method_settings={**dict(method_settings or {}), "main_stem": main_stem},
        data={**dict(data or {}), "datasets": datasets},
        stem_keys=list(getattr(bare.encoder, "stem_keys", ["stem."])),
    )
    return save_pretrained(PretrainedEncoder(state, manifest, stems), out_dir)


def tasks_from_manifest(manifest: str | os.PathLike) -> list[dict[str, Any]]:
    """The network's task specs, in its order, from an exported ``encoder.json`` (or the folder holding it).

    The export lists every data set under ``data.datasets`` (channels, classes, output kind, regions), so
    a trained model rebuilds its network without the datalist it was trained on: the bundles'
    ``inference.json`` and the Model Zoo's checks do.

    Raises:
        InputError: naming the file, when it is missing or not a MultiTalent export.
    """
    datasets = read_manifest(manifest).get("data", {}).get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        raise InputError(manifest, "not a MultiTalent export: it lists no data sets under data.datasets")
    return [{"name": name, **spec} for name, spec in datasets.items()]
