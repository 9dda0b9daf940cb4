"""Sliding-window detection over a whole preprocessed volume, with mirroring and model ensembles.

Tiles of ``patch_size`` overlap by ``overlap`` (50 % by default) and span the volume (a volume smaller
than the patch is padded at its end with zeros, the mean of z-scored data). Each tile is run by every
detector, optionally in all 8 mirrorings; each (tile, flip, detector) stream gives the detector's own
per-patch boxes (``detector.predict``, :mod:`shared.detectors.interface`: for Retina U-Net top-k,
decoding, class-wise NMS), which are un-flipped exactly, weighted by their position in the tile and
shifted to volume coordinates; weighted box clustering then merges the streams. Nothing here depends
on how a detector finds its boxes (anchors, queries, heat maps).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.inference.consolidation import tile_position_weights, tiles_covering, weighted_box_clustering

#: the 8 mirrorings of a 3-D tile, as tuples of flipped spatial axes (0 = X)
ALL_FLIPS: tuple[tuple[int, ...], ...] = tuple(
    axes for count in range(4) for axes in itertools.combinations(range(3), count)
)


def tile_origins(volume_shape: Sequence[int], patch_size: Sequence[int], overlap: float = 0.5) -> Tensor:
    """Origins of tiles covering a volume at least as large as the patch, evenly spread per axis.

    Returns:
        (T, 3) int64 origins; per axis ``ceil((L - P) / (P · (1 - overlap))) + 1`` tiles from 0 to L - P.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    per_axis = []
    for length, patch in zip(volume_shape, patch_size):
        if length < patch:
            raise ValueError(f"volume axis of {length} voxels is smaller than the patch ({patch}); pad it first")
        steps = math.ceil((length - patch) / (patch * (1 - overlap))) + 1 if length > patch else 1
        per_axis.append([round(i * (length - patch) / max(steps - 1, 1)) for i in range(steps)])
    return torch.tensor(list(itertools.product(*per_axis)), dtype=torch.int64)


def unflip_boxes(boxes: Tensor, flip_axes: Sequence[int], tile_shape: Sequence[int]) -> Tensor:
    """Boxes predicted on a flipped tile → boxes of the unflipped tile.

    Voxel ``i`` flips to ``P - 1 - i``, so the index-space interval ``[a, b)`` becomes ``[P - b, P - a)``.
    """
    boxes = boxes.clone()
    for axis in flip_axes:
        low, high = boxes[:, axis].clone(), boxes[:, axis + 3].clone()
        boxes[:, axis], boxes[:, axis + 3] = tile_shape[axis] - high, tile_shape[axis] - low
    return boxes


def _detectors(models: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    """A detector or a list of them (fold ensemble) as a list; each must have ``predict`` and ``network``."""
    detectors = [models] if isinstance(models, nn.Module) else list(models)
    for detector in detectors:
        has_predict = callable(getattr(detector, "predict", None))
        if not has_predict or not isinstance(getattr(detector, "network", None), nn.Module):
            raise TypeError(f"sliding-window inference needs detectors with predict(images) and a network "
                            f"(shared.detectors.interface.Detector), got {type(detector).__name__}")
    return detectors


@dataclass
class VolumeStreams:
    """Every (tile, flip, model) stream's detections of one volume, in volume voxels, before clustering.

    Attributes:
        boxes: (N, 6) xyzxyz voxel of the padded volume; scores: (N,); labels: (N,) int64.
        weights: (N,) tile-position weights; expected: (N,) number of streams that could see each box.
        shape: spatial shape (X, Y, Z) of the unpadded volume.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    weights: Tensor
    expected: Tensor
    shape: tuple[int, ...]


@torch.no_grad()
def predict_volume(
    models: nn.Module | Sequence[nn.Module],
    volume: Tensor,
    *,
    patch_size: Sequence[int],
    timings: dict | None = None,
    **settings: Any,
) -> dict[str, Tensor]:
    """Detect objects in a whole volume: :func:`predict_streams`, then :func:`consolidate_streams`.

    Args:
        models: a detector (:class:`shared.detectors.interface.Detector`), or a list of them (fold
            ensemble).
        volume: (C, X, Y, Z) preprocessed volume.
        patch_size: tile size (X, Y, Z), a multiple of the coarsest detection stride.
        timings: if given, filled with seconds spent in ``forward``, ``postprocess`` (per stream),
            ``consolidation`` and ``total``.
        **settings: keywords of :func:`predict_streams` (how the networks see the volume: ``overlap``,
            ``mirror``, ``batch_size``, ``sigma_scale``) and of
            :func:`consolidate_streams` (how the streams merge: ``cluster_iou``, ``score_threshold``,
            ``min_size``, ``detections_per_volume``), with their defaults there; a bundle's ``inference``.

    Returns:
        ``{"boxes": (M, 6) xyzxyz voxel of ``volume``, "scores": (M,), "labels": (M,) int64}`` on
        ``volume``'s device, sorted by score.

    The final ``score_threshold`` and ``min_size`` are the ones to tune; each stream was already
    filtered by the detector's own (per-tile) values (``detector.score_threshold``, ``min_size``), so
    final values below those would change nothing and are refused.

    Raises:
        ValueError: naming a setting that neither half takes, or a final filter below the per-tile one.
    """
    start = time.perf_counter()
    stream_settings, cluster_settings = split_settings(settings)
    check_final_filters(_detectors(models), cluster_settings)
    clock: dict = {}
    streams = predict_streams(models, volume, patch_size=patch_size, timings=clock, **stream_settings)
    tic = time.perf_counter()
    result = consolidate_streams(streams, **cluster_settings)
    clock["consolidation"] = time.perf_counter() - tic
    if timings is not None:
        timings.update(clock, total=time.perf_counter() - start)
    return {key: value.to(volume.device) for key, value in result.items()}


def split_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sliding-window settings → (keywords of :func:`predict_streams`, of :func:`consolidate_streams`).

    The keyword sets are read from the two signatures, so a setting added to either half is routed
    without a list to keep in step.

    Raises:
        ValueError: naming a setting that neither half takes, and the known ones.
    """
    stream_keys, cluster_keys = _setting_names(predict_streams), _setting_names(consolidate_streams)
    unknown = sorted(set(settings) - stream_keys - cluster_keys)
    if unknown:
        known = ", ".join(sorted(stream_keys | cluster_keys))
        raise ValueError(f"unknown sliding-window setting(s) {', '.join(map(repr, unknown))}; known: {known}")
    return ({key: value for key, value in settings.items() if key in stream_keys},
            {key: value for key, value in settings.items() if key in cluster_keys})


def check_final_filters(detectors: Sequence[nn.Module], cluster_settings: Mapping[str, Any]) -> None:
    """Refuse a final ``score_threshold`` / ``min_size`` below a detector's own per-tile filter.

    A box under the per-tile threshold never reaches clustering, and a cluster's score is a damped
    average of its members', so a lower final threshold (or size) would silently change nothing.
    """
    defaults = inspect.signature(consolidate_streams).parameters
    for name in ("score_threshold", "min_size"):
        final = float(cluster_settings.get(name, defaults[name].default))
        # the interface's per-patch filters; a detector that declares none filters nothing
        per_tile = max(float(getattr(detector, name, 0.0)) for detector in detectors)
        if final < per_tile:
            raise ValueError(
                f"inference {name} {final:g} is below the per-tile {name} {per_tile:g} (the detector's "
                f"own filter; tile_{name} in the bundles): it would change nothing; "
                f"use at least {per_tile:g} or lower the per-tile value too"
            )


def _setting_names(function) -> set[str]:
    """Keyword-only parameters of ``function`` other than the per-call ones (patch size, timings)."""
    parameters = inspect.signature(inspect.unwrap(function)).parameters.values()
    return {p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in ("patch_size", "timings")}


@torch.no_grad()
def predict_streams(
    models: nn.Module | Sequence[nn.Module],
    volume: Tensor,
    *,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    mirror: bool = False,
    batch_size: int = 4,
    sigma_scale: float = 0.25,
    timings: dict | None = None,
) -> VolumeStreams:
    """The network half of :func:`predict_volume`: every stream's detections, not yet clustered.

    Kept separate so a post-processing sweep runs the networks once per volume and then re-clusters
    the same streams with :func:`consolidate_streams` for each setting.

    Args:
        models, volume, patch_size: as in :func:`predict_volume`.
        overlap: tile overlap fraction per axis.
        mirror: test-time mirroring over all 8 flips.
        batch_size: tiles per ``predict`` call.
        sigma_scale: Gaussian width of the position weights (fraction of the tile).
        timings: if given, filled with seconds in ``forward`` (the detectors' ``network`` calls),
            ``postprocess`` (the rest of ``predict`` and the stream bookkeeping) and the count of ``streams``.
    """
    clock = {"forward": 0.0, "postprocess": 0.0}
    detectors = _detectors(models)
    padded = _pad_to(volume, patch_size)
    origins = tile_origins(tuple(padded.shape[1:]), patch_size, overlap)
    flips = ALL_FLIPS if mirror else ((),)
    jobs = [(origin, flip) for origin in origins for flip in flips]
    collected = []
    for detector in detectors:
        was_training = detector.training
        detector.eval()
        with _network_clock(detector, clock):
            for first in range(0, len(jobs), batch_size):
                batch_jobs = jobs[first : first + batch_size]
                collected += _run_batch(detector, padded, batch_jobs, patch_size, sigma_scale, clock)
        detector.train(was_training)
    boxes, scores, labels, weights = (torch.cat(parts) for parts in zip(*collected))
    expected = tiles_covering((boxes[:, :3] + boxes[:, 3:]) / 2, origins.to(boxes.device), patch_size)
    expected = expected * len(flips) * len(detectors)
    if timings is not None:
        timings.update(clock, streams=len(jobs) * len(detectors))
    return VolumeStreams(boxes, scores, labels, weights, expected, tuple(volume.shape[1:]))


def consolidate_streams(
    streams: VolumeStreams,
    *,
    cluster_iou: float = 0.5,
    score_threshold: float = 0.05,
    min_size: float = 0.01,
    detections_per_volume: int = 100,
) -> dict[str, Tensor]:
    """The clustering half of :func:`predict_volume`: weighted box clustering, clipping, filtering.

    Args:
        streams: the output of :func:`predict_streams`.
        cluster_iou: IoU threshold of weighted box clustering.
        score_threshold: smallest consolidated score kept.
        min_size: smallest consolidated box side kept (voxels).
        detections_per_volume: most boxes returned.

    Returns:
        ``{"boxes": (M, 6), "scores": (M,), "labels": (M,)}`` on the streams' device, sorted by score.
    """
    boxes, scores, labels = weighted_box_clustering(
        streams.boxes, streams.scores, streams.labels, streams.weights, streams.expected.clamp(min=1),
        iou_threshold=cluster_iou,
    )
    return _finalise(boxes, scores, labels, streams.shape, score_threshold, min_size, detections_per_volume)


def _pad_to(volume: Tensor, patch_size: Sequence[int]) -> Tensor:
    """Zero-pad at the end of each axis shorter than the patch."""
    pads = [max(0, p - s) for s, p in zip(volume.shape[1:], patch_size)]
    if not any(pads):
        return volume
    # F.pad lists the last axis first
    return F.pad(volume, [value for pad in reversed(pads) for value in (0, pad)])


@contextlib.contextmanager
def _network_clock(detector: nn.Module, clock: dict) -> Iterator[None]:
    """Time the calls of ``detector.network`` (the interface's network) into ``clock["forward"]``.

    The clock stops when the call returns; on CUDA the work may still run and is then counted by
    whatever waits for it next (the detector's own post-processing).
    """
    network = detector.network  # the interface's trainable network
    started: list[float] = []

    def start(module, inputs):
        started.append(time.perf_counter())

    def stop(module, inputs, outputs):
        clock["forward"] += time.perf_counter() - started.pop()

    handles = [network.register_forward_pre_hook(start), network.register_forward_hook(stop)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _run_batch(detector, padded, batch_jobs, patch_size, sigma_scale, clock):
    """Run one batch of (origin, flip) tiles; returns per-stream (boxes, scores, labels, weights)."""
    device = next(detector.parameters()).device
    tiles = []
    for origin, flip in batch_jobs:
        x, y, z = (int(v) for v in origin)
        tile = padded[:, x : x + patch_size[0], y : y + patch_size[1], z : z + patch_size[2]]
        tiles.append(torch.flip(tile, [axis + 1 for axis in flip]) if flip else tile)
    tic, forward_before = time.perf_counter(), clock["forward"]
    detections = detector.predict(torch.stack(tiles).to(device))
    clock["postprocess"] -= clock["forward"] - forward_before  # predict's network time is "forward"
    streams = []
    for (origin, flip), found in zip(batch_jobs, detections):
        boxes = unflip_boxes(found["boxes"], flip, patch_size)
        weights = tile_position_weights(boxes, patch_size, sigma_scale=sigma_scale)
        shift = origin.to(boxes).repeat(2)
        streams.append((boxes + shift, found["scores"], found["labels"], weights))
    clock["postprocess"] += time.perf_counter() - tic
    return streams


def _finalise(boxes, scores, labels, shape, score_threshold, min_size, limit):
    """Clip to the unpadded volume, drop small or low-scoring boxes, keep the best ``limit``."""
    upper = torch.as_tensor(shape, dtype=boxes.dtype, device=boxes.device)
    boxes = torch.cat([boxes[:, :3].clamp(min=0), torch.minimum(boxes[:, 3:], upper)], dim=1)
    keep = (scores >= score_threshold) & ((boxes[:, 3:] - boxes[:, :3]) >= min_size).all(dim=1)
    boxes, scores, labels = boxes[keep][:limit], scores[keep][:limit], labels[keep][:limit]
    return {"boxes": boxes, "scores": scores, "labels": labels}
