"""Box consolidation across sliding-window tiles, mirrorings and models: weighted box clustering (WBC).

Every stream (one tile × one flip × one model) predicts its boxes independently; the same object is
then seen by several streams. WBC (Jaeger et al., Retina U-Net; nnDetection) clusters the boxes of a
class greedily around the highest score (IoU above a threshold), and replaces each cluster by

* coordinates: the average of its boxes weighted by ``score · weight · IoU-with-the-seed``;
* score: ``Σ iou·w·s / (Σ iou·w + n_missing · mean(iou·w))``, where ``n_missing`` is how many of
  the streams expected to see the object did not predict it; a box found by one tile out of eight
  overlapping ones is damped, one found by all keeps its score.

``weight`` is the box's trust from its position in the tile (:func:`tile_position_weights`): boxes near
a tile border are often cut off and get little weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor



def tile_position_weights(boxes: Tensor, tile_shape: Sequence[int], *, sigma_scale: float = 0.25) -> Tensor:
    """Gaussian weight of each box centre's distance to the tile centre.

    Args:
        boxes: (N, 6) xyzxyz boxes in tile coordinates.
        tile_shape: spatial size of the tile (X, Y, Z).
        sigma_scale: Gaussian sigma as a fraction of the tile size per axis (0.25: a centre on the
            tile border weighs e^-2 ≈ 0.14 per axis).

    Returns:
        (N,) weights in (0, 1], 1 at the tile centre.
    """
    size = torch.as_tensor(list(tile_shape), dtype=torch.float64, device=boxes.device)
    centres = (boxes[:, :3] + boxes[:, 3:]).double() / 2
    normalised = (centres - size / 2) / (sigma_scale * size)
    return torch.exp(-0.5 * (normalised**2).sum(dim=1)).clamp(min=1e-6).to(boxes.dtype)


def tiles_covering(points: Tensor, tile_origins: Tensor, tile_shape: Sequence[int]) -> Tensor:
    """How many tiles contain each point (box centres), to know how many streams should see a box.

    Shape:
        points (N, 3), tile_origins (T, 3) → (N,) int64.
    """
    size = torch.as_tensor(list(tile_shape), dtype=points.dtype, device=points.device)
    origins = tile_origins.to(points)
    inside = (points[:, None, :] >= origins[None]) & (points[:, None, :] <= origins[None] + size)
    return inside.all(dim=-1).sum(dim=1)


def weighted_box_clustering(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    weights: Tensor,
    expected: Tensor,
    *,
    iou_threshold: float = 0.5,
    missing_weight: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Class-wise weighted box clustering.

    Args:
        boxes: (N, 6) xyzxyz boxes of all streams in volume coordinates.
        scores: (N,) scores.
        labels: (N,) classes; boxes of different classes never merge.
        weights: (N,) position weights (:func:`tile_position_weights`).
        expected: (N,) number of streams that should have predicted a box there.
        iou_threshold: boxes with IoU above it with a cluster's seed join the cluster.
        missing_weight: strength of the penalty for missing predictions (0: none).

    Returns:
        ``(boxes (M, 6), scores (M,), labels (M,))`` of the clusters, sorted by score.
    """
    out_boxes, out_scores, out_labels = [], [], []
    for label in labels.unique():
        members = labels == label
        b, s = _cluster_one_class(
            boxes[members], scores[members], weights[members], expected[members], iou_threshold, missing_weight
        )
        out_boxes.append(b)
        out_scores.append(s)
        out_labels.append(torch.full_like(s, int(label), dtype=torch.int64))
    if not out_boxes:
        return boxes.new_zeros((0, 6)), scores.new_zeros((0,)), labels.new_zeros((0,), dtype=torch.int64)
    merged_scores = torch.cat(out_scores)
    order = merged_scores.argsort(descending=True, stable=True)
    return torch.cat(out_boxes)[order], merged_scores[order], torch.cat(out_labels)[order]


def _cluster_one_class(boxes, scores, weights, expected, iou_threshold, missing_weight):
    # the greedy loop runs once per cluster, thousands of times on a busy scan: numpy steps take
    # microseconds where torch's take tens, and each seed is compared only with the boxes whose x range
    # can overlap its own (a window of the boxes sorted by x start), not with all N: no (N, N) matrix
    box_array, score_array = boxes.cpu().numpy(), scores.cpu().numpy()
    weight_array, expected_array = weights.cpu().numpy(), expected.cpu().float().numpy()
    by_x = np.argsort(box_array[:, 0], kind="stable")
    x_start = box_array[by_x, 0]
    reach = float((box_array[:, 3] - box_array[:, 0]).max(initial=0.0))
    volumes = np.clip(box_array[:, 3:] - box_array[:, :3], 0, None).prod(axis=1)
    alive = np.ones(len(box_array), dtype=bool)
    rank = np.empty(len(box_array), dtype=np.int64)
    rank[np.argsort(-score_array, kind="stable")] = np.arange(len(box_array))
    new_boxes, new_scores = [], []
    for seed in np.argsort(-score_array, kind="stable"):
        if not alive[seed]:
            continue
        window = by_x[np.searchsorted(x_start, box_array[seed, 0] - reach, "left"):
                      np.searchsorted(x_start, box_array[seed, 3], "right")]
        window = window[alive[window]]
        window = window[np.argsort(rank[window])]  # score order, the seed first
        seed_ious = _seed_iou(box_array, volumes, seed, window)
        in_cluster = (seed_ious > iou_threshold) | (window == seed)  # a zero-volume seed is its own cluster
        members = window[in_cluster]
        alive[members] = False
        match_weights = seed_ious[in_cluster] * weight_array[members]
        weighted_scores = match_weights * score_array[members]
        n_missing = max(expected_array[members].mean() - members.size, 0.0)
        denominator = match_weights.sum() + n_missing * match_weights.mean() * missing_weight
        new_scores.append(weighted_scores.sum() / max(denominator, 1e-12))
        coordinate_weights = weighted_scores / max(weighted_scores.sum(), 1e-12)
        new_boxes.append((box_array[members] * coordinate_weights[:, None]).sum(axis=0))
    return (torch.as_tensor(np.stack(new_boxes), dtype=boxes.dtype, device=boxes.device),
            torch.as_tensor(np.asarray(new_scores), dtype=scores.dtype, device=scores.device))


def _seed_iou(boxes: np.ndarray, volumes: np.ndarray, seed: int, others: np.ndarray) -> np.ndarray:
    """IoU of box ``seed`` with the boxes ``others`` (as :func:`shared.boxes.nms.box_iou`)."""
    low = np.maximum(boxes[seed, :3], boxes[others, :3])
    high = np.minimum(boxes[seed, 3:], boxes[others, 3:])
    intersection = np.clip(high - low, 0, None).prod(axis=1)
    union = volumes[seed] + volumes[others] - intersection
    tiny = np.finfo(boxes.dtype).tiny
    return np.where(union > 0, intersection / np.maximum(union, tiny), 0.0).astype(boxes.dtype, copy=False)
