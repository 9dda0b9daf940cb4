"""The per-detection match results of a test set: the one input of every metric.

Matching (boxes against ground truth) is the only expensive step of an evaluation. Its outcome is kept
per detection (image, class, score, and whether it matched or was ignored at each IoU threshold) and
per image (how many ground-truth objects of each class it holds). Every metric, every bootstrap draw
and every model comparison then only re-aggregates these arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["MatchRecord", "concatenate_records"]


@dataclasses.dataclass(frozen=True)
class MatchRecord:
    """Match results of a set of images.

    Detections are ordered by image, then class, then descending score (stable), at most
    ``max_detections`` per image and class.

    Attributes:
        iou_thresholds: IoU thresholds the detections were matched at, ascending. Shape ``(T,)``.
        num_classes: number of classes ``C``; labels are ``0 .. C-1``.
        max_detections: the per image and class cap that was applied.
        detection_image: image index of each detection. Shape ``(D,)``.
        detection_class: class of each detection. Shape ``(D,)``.
        detection_score: score of each detection. Shape ``(D,)``.
        detection_matched: whether a detection matched a ground-truth object. Shape ``(T, D)``.
        detection_ignored: whether it matched an ignored ground-truth object (neither true nor false
            positive). Shape ``(T, D)``.
        ground_truth_count: non-ignored ground-truth objects per image and class. Shape ``(I, C)``.
    """

    iou_thresholds: np.ndarray
    num_classes: int
    max_detections: int
    detection_image: np.ndarray
    detection_class: np.ndarray
    detection_score: np.ndarray
    detection_matched: np.ndarray
    detection_ignored: np.ndarray
    ground_truth_count: np.ndarray

    def __post_init__(self) -> None:
        count = self.detection_score.shape[0]
        assert self.detection_image.shape == (count,) and self.detection_class.shape == (count,)
        assert self.detection_matched.shape == (len(self.iou_thresholds), count)
        assert self.detection_ignored.shape == self.detection_matched.shape
        assert self.ground_truth_count.ndim == 2 and self.ground_truth_count.shape[1] == self.num_classes

    @property
    def num_images(self) -> int:
        """Number of images ``I``, including those without detections or objects."""
        return int(self.ground_truth_count.shape[0])

    def threshold_index(self, iou_threshold: float) -> int:
        """Index of an IoU threshold, raising ``KeyError`` with the known ones.

        The exact value wins: a record may hold both 0.3 (named by the user) and the IoU range's
        0.30000000000000004, matched apart (a detection at IoU exactly 0.3 matches only the first). A
        value within 1e-9 is accepted only when no exact one exists (e.g. a key's rounded ``0.30``).
        """
        exact = np.flatnonzero(self.iou_thresholds == iou_threshold)
        close = exact if exact.size else np.flatnonzero(np.abs(self.iou_thresholds - iou_threshold) < 1e-9)
        if close.size == 0:
            known = ", ".join(f"{value:.2f}" for value in self.iou_thresholds)
            raise KeyError(f"IoU threshold {iou_threshold} was not matched; matched thresholds: {known}.")
        return int(close[0])

    def select_images(self, image_indices: Sequence[int] | np.ndarray) -> MatchRecord:
        """The record of a subset of images, in the given order (an image may not repeat).

        Args:
            image_indices: indices into this record's images.

        Returns:
            a record whose image ``k`` is this record's image ``image_indices[k]``.
        """
        indices = np.asarray(image_indices, dtype=np.int64)
        new_index = np.full(self.num_images, -1, dtype=np.int64)
        new_index[indices] = np.arange(indices.size)
        mapped = new_index[self.detection_image]
        keep = np.flatnonzero(mapped >= 0)
        # Stable sort by new image keeps class and score order inside each image.
        order = keep[np.argsort(mapped[keep], kind="stable")]
        return dataclasses.replace(
            self,
            detection_image=mapped[order],
            detection_class=self.detection_class[order],
            detection_score=self.detection_score[order],
            detection_matched=self.detection_matched[:, order],
            detection_ignored=self.detection_ignored[:, order],
            ground_truth_count=self.ground_truth_count[indices],
        )

    def save(self, path: str | Path, **extra: np.ndarray) -> None:
        """Write the record (and extra arrays, e.g. image names) to an ``.npz`` file."""
        arrays = {field.name: np.asarray(getattr(self, field.name)) for field in dataclasses.fields(self)}
        np.savez_compressed(path, **arrays, **extra)

    @classmethod
    def load(cls, path: str | Path) -> tuple[MatchRecord, dict[str, np.ndarray]]:
        """Read a record written by :meth:`save`; returns it and the extra arrays."""
        with np.load(path, allow_pickle=False) as data:
            names = [field.name for field in dataclasses.fields(cls)]
            values = {name: data[name] for name in names}
            extra = {key: data[key] for key in data.files if key not in names}
        values["num_classes"] = int(values["num_classes"])
        values["max_detections"] = int(values["max_detections"])
        return cls(**values), extra


def concatenate_records(records: Sequence[MatchRecord]) -> MatchRecord:
    """Join records of disjoint image sets (e.g. validation batches or ranks) into one.

    Args:
        records: records matched with the same thresholds, classes and cap.

    Returns:
        one record whose images are those of ``records[0]``, then ``records[1]``, and so on.
    """
    if not records:
        raise ValueError("concatenate_records needs at least one record.")
    first = records[0]
    for record in records[1:]:
        same = (
            record.num_classes == first.num_classes
            and record.max_detections == first.max_detections
            and np.array_equal(record.iou_thresholds, first.iou_thresholds)
        )
        if not same:
            raise ValueError("Records to concatenate differ in IoU thresholds, classes or max_detections.")
    offsets = np.cumsum([0] + [record.num_images for record in records[:-1]])
    return MatchRecord(
        iou_thresholds=first.iou_thresholds,
        num_classes=first.num_classes,
        max_detections=first.max_detections,
        detection_image=np.concatenate([r.detection_image + o for r, o in zip(records, offsets)]),
        detection_class=np.concatenate([r.detection_class for r in records]),
        detection_score=np.concatenate([r.detection_score for r in records]),
        detection_matched=np.concatenate([r.detection_matched for r in records], axis=1),
        detection_ignored=np.concatenate([r.detection_ignored for r in records], axis=1),
        ground_truth_count=np.concatenate([r.ground_truth_count for r in records], axis=0),
    )
