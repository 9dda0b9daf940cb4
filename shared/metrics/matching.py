"""Greedy matching of detections to ground truth, per image and class, vectorised over images.

The rule is COCO's, as in ``monai.apps.detection.metrics.matching`` (and nnDetection): detections are
visited by descending score (stable sort), at most ``max_detections`` per image and class; each takes
the still unmatched ground-truth object with the highest IoU that is at least the threshold.
Non-ignored objects are preferred; a detection that can only match an ignored object is ignored (it is
neither a true nor a false positive). Equal IoUs go to the later object, as in MONAI, so the result is
identical to MONAI's for every input.

Instead of MONAI's Python loops over thresholds x detections x objects, every (image, class) pair with
both detections and objects is padded into a batch, and one vectorised step per detection rank matches
all pairs and thresholds at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.boxes.ops import batched_pairwise_iou_3d
from shared.metrics.records import MatchRecord

__all__ = ["match_detections"]

# Elements of one padded (pairs x detections x objects) IoU batch: bounds memory to ~100 MB.
_BATCH_ELEMENTS = 2_000_000


def _flatten(arrays: Sequence[np.ndarray], width: int | None, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-image arrays; returns the values and the image index of each row."""
    parts = [np.asarray(array, dtype=dtype) for array in arrays]
    if width is not None:
        parts = [part.reshape(-1, width) for part in parts]
    counts = np.array([part.shape[0] for part in parts], dtype=np.int64)
    image_index = np.repeat(np.arange(len(parts), dtype=np.int64), counts)
    empty = np.zeros((0, width) if width else (0,), dtype=dtype)
    return (np.concatenate(parts) if parts else empty), image_index


def _rank_in_group(sorted_groups: np.ndarray) -> np.ndarray:
    """Position of each element inside its run of equal group ids (``sorted_groups`` is sorted)."""
    return np.arange(sorted_groups.size) - np.searchsorted(sorted_groups, sorted_groups, side="left")


def _greedy_match(
    iou: np.ndarray, ground_truth_ignored: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Match the detections of a padded batch, rank by rank.

    Args:
        iou: IoU of detection ``r`` of pair ``b`` with object ``g``; -1 for padding.
        ground_truth_ignored: whether an object is ignored.
        thresholds: IoU thresholds (already capped below 1).

    Returns:
        ``matched`` and ``ignored`` flags per threshold, pair and detection rank.

    Shape:
        iou ``(B, D, G)``, ground_truth_ignored ``(B, G)``, thresholds ``(T,)`` -> two ``(T, B, D)``.
    """
    pairs, ranks, objects = iou.shape
    taken = np.zeros((thresholds.size, pairs, objects), dtype=bool)
    matched = np.zeros((thresholds.size, pairs, ranks), dtype=bool)
    ignored = np.zeros_like(matched)
    lowest = thresholds.min()
    for rank in range(ranks):
        iou_rank = iou[:, rank, :]
        # Only pairs whose detection overlaps some object enough can change state.
        rows = np.flatnonzero((iou_rank >= lowest).any(axis=1))
        if rows.size == 0:
            continue
        iou_rows = iou_rank[rows]
        ignored_rows = ground_truth_ignored[rows]
        eligible = (iou_rows[None] >= thresholds[:, None, None]) & ~taken[:, rows]
        regular = eligible & ~ignored_rows[None]
        eligible = np.where(regular.any(axis=2, keepdims=True), regular, eligible)
        key = np.where(eligible, iou_rows[None], -1.0)
        # argmax over the reversed axis picks the last of equal IoUs, MONAI's tie rule.
        pick = objects - 1 - np.argmax(key[:, :, ::-1], axis=2)
        found = np.take_along_axis(eligible, pick[..., None], axis=2)[..., 0]
        threshold_index, row_index = np.nonzero(found)
        taken[threshold_index, rows[row_index], pick[threshold_index, row_index]] = True
        matched[:, rows, rank] = found
        ignored[:, rows, rank] = found & np.take_along_axis(
            np.broadcast_to(ignored_rows[None], eligible.shape), pick[..., None], axis=2
        )[..., 0]
    return matched, ignored


def _chunks_by_size(object_counts: np.ndarray, detection_counts: np.ndarray) -> list[np.ndarray]:
    """Split pairs (sorted by object count) into batches whose padded IoU stays small."""
    order = np.argsort(object_counts, kind="stable")
    chunks, start = [], 0
    while start < order.size:
        size = max(1, _BATCH_ELEMENTS // int(detection_counts.max() * object_counts[order[start]]))
        end = min(order.size, start + size)
        size = max(1, _BATCH_ELEMENTS // int(detection_counts.max() * object_counts[order[end - 1]]))
        end = min(order.size, start + size)
        chunks.append(order[start:end])
        start = end
    return chunks


def _validate_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{what} labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}.")


def match_detections(
    prediction_boxes: Sequence[np.ndarray],
    prediction_labels: Sequence[np.ndarray],
    prediction_scores: Sequence[np.ndarray],
    ground_truth_boxes: Sequence[np.ndarray],
    ground_truth_labels: Sequence[np.ndarray],
    ground_truth_ignore: Sequence[np.ndarray] | None = None,
    *,
    num_classes: int,
    iou_thresholds: Sequence[float] = (0.1,),
    max_detections: int = 100,
) -> MatchRecord:
    """Match the detections of many images to their ground truth at several IoU thresholds.

    Args:
        prediction_boxes: per image, xyzxyz boxes. Shape ``(N_i, 6)``.
        prediction_labels: per image, class of each box in ``0 .. num_classes-1``. Shape ``(N_i,)``.
        prediction_scores: per image, score of each box. Shape ``(N_i,)``.
        ground_truth_boxes: per image, xyzxyz boxes. Shape ``(M_i, 6)``.
        ground_truth_labels: per image, class of each object. Shape ``(M_i,)``.
        ground_truth_ignore: per image, whether each object is ignored; ``None``: none is. Shape ``(M_i,)``.
        num_classes: number of classes ``C``.
        iou_thresholds: IoU thresholds to match at (sorted ascending in the record).
        max_detections: at most this many detections per image and class, the highest scoring.

    Returns:
        the :class:`MatchRecord` of these images.
    """
    image_count = len(prediction_boxes)
    lists = (prediction_labels, prediction_scores, ground_truth_boxes, ground_truth_labels)
    if any(len(values) != image_count for values in lists):
        raise ValueError("Every per-image input of match_detections needs one entry per image.")
    if ground_truth_ignore is None:
        ground_truth_ignore = [np.zeros(len(labels), dtype=bool) for labels in ground_truth_labels]
    thresholds = np.unique(np.asarray(iou_thresholds, dtype=np.float64))
    boxes, prediction_image = _flatten(prediction_boxes, 6, np.float64)
    labels, _ = _flatten(prediction_labels, None, np.int64)
    scores, _ = _flatten(prediction_scores, None, np.float64)
    object_boxes, object_image = _flatten(ground_truth_boxes, 6, np.float64)
    object_labels, _ = _flatten(ground_truth_labels, None, np.int64)
    object_ignored, _ = _flatten(ground_truth_ignore, None, bool)
    if not (labels.size == scores.size == boxes.shape[0]) or not (
        object_labels.size == object_ignored.size == object_boxes.shape[0]
    ):
        raise ValueError("Boxes, labels, scores and ignore flags of an image must have equal lengths.")
    _validate_labels(labels, num_classes, "Prediction")
    _validate_labels(object_labels, num_classes, "Ground-truth")

    # Detections sorted by (image, class) pair, then by descending score; stable like MONAI's mergesort.
    prediction_group = prediction_image * num_classes + labels
    order = np.lexsort((-scores, prediction_group))
    rank = _rank_in_group(prediction_group[order])
    order, rank = order[rank < max_detections], rank[rank < max_detections]
    group = prediction_group[order]

    object_group = object_image * num_classes + object_labels
    object_order = np.lexsort((object_ignored, object_group))  # non-ignored first, as MONAI
    object_rank = _rank_in_group(object_group[object_order])
    objects_per_group = np.bincount(object_group, minlength=image_count * num_classes)
    counted = np.bincount(object_group[~object_ignored], minlength=image_count * num_classes)

    matched = np.zeros((thresholds.size, order.size), dtype=bool)
    ignored = np.zeros_like(matched)
    _match_groups(
        group, rank, boxes[order], object_group[object_order], object_rank, object_boxes[object_order],
        object_ignored[object_order], objects_per_group, np.minimum(thresholds, 1 - 1e-10), matched, ignored,
    )
    return MatchRecord(
        iou_thresholds=thresholds,
        num_classes=int(num_classes),
        max_detections=int(max_detections),
        detection_image=prediction_image[order],
        detection_class=labels[order],
        detection_score=scores[order],
        detection_matched=matched,
        detection_ignored=ignored,
        ground_truth_count=counted.reshape(image_count, num_classes),
    )


def _match_groups(
    group: np.ndarray,
    rank: np.ndarray,
    boxes: np.ndarray,
    object_group: np.ndarray,
    object_rank: np.ndarray,
    object_boxes: np.ndarray,
    object_ignored: np.ndarray,
    objects_per_group: np.ndarray,
    thresholds: np.ndarray,
    matched: np.ndarray,
    ignored: np.ndarray,
) -> None:
    """Fill ``matched``/``ignored`` (T, D) for detections of pairs that have objects, batch by batch."""
    needs_matching = np.flatnonzero(objects_per_group[group] > 0)
    if needs_matching.size == 0:
        return
    pair_ids, detection_counts = np.unique(group[needs_matching], return_counts=True)
    object_counts = objects_per_group[pair_ids]
    chunk_of_pair = np.full(objects_per_group.size, -1, dtype=np.int64)
    slot_of_pair = np.full(objects_per_group.size, -1, dtype=np.int64)
    chunks = _chunks_by_size(object_counts, detection_counts)
    for chunk_index, members in enumerate(chunks):
        chunk_of_pair[pair_ids[members]] = chunk_index
        slot_of_pair[pair_ids[members]] = np.arange(members.size)
    # Detections and objects sorted by chunk, so each chunk is one contiguous slice.
    detection_chunk = chunk_of_pair[group[needs_matching]]
    detection_order = needs_matching[np.argsort(detection_chunk, kind="stable")]
    detection_bounds = np.searchsorted(np.sort(detection_chunk), np.arange(len(chunks) + 1))
    relevant_objects = np.flatnonzero(chunk_of_pair[object_group] >= 0)
    object_chunk = chunk_of_pair[object_group[relevant_objects]]
    object_order = relevant_objects[np.argsort(object_chunk, kind="stable")]
    object_bounds = np.searchsorted(np.sort(object_chunk), np.arange(len(chunks) + 1))
    for chunk_index, members in enumerate(chunks):
        detections = detection_order[detection_bounds[chunk_index] : detection_bounds[chunk_index + 1]]
        objects = object_order[object_bounds[chunk_index] : object_bounds[chunk_index + 1]]
        detection_slot, object_slot = slot_of_pair[group[detections]], slot_of_pair[object_group[objects]]
        pairs = members.size
        width, depth = int(rank[detections].max()) + 1, int(object_rank[objects].max()) + 1
        padded_boxes = np.zeros((pairs, width, 6))
        padded_boxes[detection_slot, rank[detections]] = boxes[detections]
        padded_objects = np.zeros((pairs, depth, 6))
        padded_objects[object_slot, object_rank[objects]] = object_boxes[objects]
        valid_objects = np.zeros((pairs, depth), dtype=bool)
        valid_objects[object_slot, object_rank[objects]] = True
        padded_ignored = np.zeros((pairs, depth), dtype=bool)
        padded_ignored[object_slot, object_rank[objects]] = object_ignored[objects]
        valid_detections = np.zeros((pairs, width), dtype=bool)
        valid_detections[detection_slot, rank[detections]] = True
        iou = batched_pairwise_iou_3d(padded_boxes, padded_objects)
        # Padding never matches, not even at an IoU threshold of 0.
        iou = np.where(valid_detections[:, :, None] & valid_objects[:, None, :], iou, -1.0)
        chunk_matched, chunk_ignored = _greedy_match(iou, padded_ignored, thresholds)
        matched[:, detections] = chunk_matched[:, detection_slot, rank[detections]]
        ignored[:, detections] = chunk_ignored[:, detection_slot, rank[detections]]
