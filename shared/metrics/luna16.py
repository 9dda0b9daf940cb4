"""LUNA16 FROC and competition performance metric (CPM).

The definition is the one of the LUNA16 challenge's evaluation script (``noduleCADEvaluationLUNA16``):

- per scan only the 100 most probable candidates count; when a scan has more, those whose probability
  is not strictly above the 101st highest are dropped (so ties at the cut drop together);
- a candidate *hits* a finding when the squared distance of its centre to the finding's centre is
  strictly below the squared radius (a diameter below 0 means 10 mm);
- each included nodule hit by any candidate is one true positive scored with the highest probability
  among its hits; further hits on it are ignored (neither true nor false positive);
- candidates that hit an excluded finding (and no included nodule) are ignored too;
- every other candidate is a false positive;
- the FROC curve has one point per distinct probability (tied probabilities form one step), starting at
  (0, 0); a missed nodule lowers the sensitivity everywhere; its x values are the script's
  ``fpr * false positives / scans`` (:func:`shared.metrics.curves.scaled_fraction`), which can lie one
  float step right of the exact rate, so a vertical step at exactly 8 is read at its bottom, as there;
- the curve is interpolated linearly onto the script's grid of 10,001 false-positive rates from 1/8 to 8
  and read at grid index ``floor((x - 1/8) * 10000 / (8 - 1/8))`` for x in 1/8, 1/4, ..., 8; the CPM is
  the mean of these seven sensitivities.

Where the script would produce NaN (no nodule hit at all) this returns 0 sensitivities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from shared.metrics.curves import FROC_FALSE_POSITIVES_PER_IMAGE, froc_points

__all__ = ["FindingTable", "Luna16Result", "evaluate_luna16", "luna16_sensitivities"]

_GRID = np.linspace(0.125, 8.0, num=10001)


@dataclasses.dataclass(frozen=True)
class FindingTable:
    """Points in world millimetres, one row each.

    Attributes:
        scan: series UID of each row. Shape ``(N,)``.
        centre: ``(x, y, z)`` in mm. Shape ``(N, 3)``.
        value: diameter in mm (annotations) or probability (candidates). Shape ``(N,)``.
    """

    scan: np.ndarray
    centre: np.ndarray
    value: np.ndarray

    @classmethod
    def empty(cls) -> FindingTable:
        return cls(np.zeros(0, dtype=str), np.zeros((0, 3)), np.zeros(0))

    def rows_of(self, scan: str) -> np.ndarray:
        return np.flatnonzero(self.scan == scan)


@dataclasses.dataclass(frozen=True)
class Luna16Result:
    """Outcome of a LUNA16 evaluation.

    Attributes:
        metrics: ``CPM``, ``sensitivity_FPPI_<x>`` for the seven rates, and counts.
        false_positives_per_image: FROC curve x values. Shape ``(P,)``.
        sensitivity: FROC curve y values. Shape ``(P,)``.
        entry_scan: scan index of each FROC entry (for bootstrapping). Shape ``(E,)``.
        entry_score: probability of each FROC entry. Shape ``(E,)``.
        entry_true: whether each entry is a hit nodule (else a false positive). Shape ``(E,)``.
        nodules_per_scan: included nodules per scan. Shape ``(S,)``.
    """

    metrics: dict[str, float]
    false_positives_per_image: np.ndarray
    sensitivity: np.ndarray
    entry_scan: np.ndarray
    entry_score: np.ndarray
    entry_true: np.ndarray
    nodules_per_scan: np.ndarray


def luna16_sensitivities(false_positives_per_image: np.ndarray, sensitivity: np.ndarray) -> np.ndarray:
    """The seven CPM sensitivities, interpolated on the official grid as the LUNA16 script does."""
    index = ((np.asarray(FROC_FALSE_POSITIVES_PER_IMAGE) - 0.125) * 10000 / (8 - 0.125)).astype(int)
    return np.interp(_GRID[index], false_positives_per_image, sensitivity)


def _top_candidates(probability: np.ndarray, max_marks: int) -> np.ndarray:
    """Indices of the candidates the script keeps for one scan."""
    if probability.size <= max_marks:
        return np.arange(probability.size)
    cut = np.sort(probability)[::-1][max_marks]
    return np.flatnonzero(probability > cut)


def _scan_entries(
    candidates: np.ndarray, probability: np.ndarray, nodules: np.ndarray, radius: np.ndarray,
    excluded: np.ndarray, excluded_radius: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """FROC entries of one scan: (scores, is_true, number of duplicate hits ignored)."""
    nodule_hit = ((nodules[:, None, :] - candidates[None]) ** 2).sum(axis=2) < radius[:, None] ** 2
    excluded_hit = ((excluded[:, None, :] - candidates[None]) ** 2).sum(axis=2) < excluded_radius[:, None] ** 2
    found = nodule_hit.any(axis=1)
    best = np.where(nodule_hit, probability[None], -np.inf).max(axis=1, initial=-np.inf)[found]
    false = ~nodule_hit.any(axis=0) & ~excluded_hit.any(axis=0)
    duplicates = int(nodule_hit.sum() - found.sum())
    scores = np.concatenate([best, probability[false]])
    return scores, np.concatenate([np.ones(best.size, bool), np.zeros(int(false.sum()), bool)]), duplicates


def _radius(diameter: np.ndarray) -> np.ndarray:
    return np.where(diameter < 0, 10.0, diameter) / 2.0


def evaluate_luna16(
    candidates: FindingTable,
    annotations: FindingTable,
    scans: Sequence[str],
    excluded: FindingTable | None = None,
    *,
    max_marks: int = 100,
) -> Luna16Result:
    """LUNA16 sensitivities at 1/8 ... 8 false positives per scan and their mean, the CPM.

    Args:
        candidates: CAD marks; ``value`` is the probability.
        annotations: included nodules; ``value`` is the diameter in mm.
        scans: the series UIDs evaluated (rows of other scans are not used).
        excluded: irrelevant findings; ``value`` is the diameter (below 0: 10 mm).
        max_marks: marks kept per scan.

    Returns:
        the :class:`Luna16Result`.
    """
    excluded = FindingTable.empty() if excluded is None else excluded
    scores, truths, entry_scans, nodule_counts = [], [], [], []
    duplicates = 0
    for scan_index, scan in enumerate(scans):
        rows = candidates.rows_of(scan)
        rows = rows[_top_candidates(candidates.value[rows], max_marks)]
        nodule_rows, excluded_rows = annotations.rows_of(scan), excluded.rows_of(scan)
        scan_scores, scan_truth, scan_duplicates = _scan_entries(
            candidates.centre[rows], candidates.value[rows], annotations.centre[nodule_rows],
            _radius(annotations.value[nodule_rows]), excluded.centre[excluded_rows],
            _radius(excluded.value[excluded_rows]),
        )
        scores.append(scan_scores)
        truths.append(scan_truth)
        entry_scans.append(np.full(scan_scores.size, scan_index))
        nodule_counts.append(nodule_rows.size)
        duplicates += scan_duplicates
    entry_score = np.concatenate(scores) if scores else np.zeros(0)
    entry_true = np.concatenate(truths) if truths else np.zeros(0, bool)
    lesion_count = int(np.sum(nodule_counts))
    rate, sensitivity = froc_points(entry_score, entry_true, lesion_count, max(len(scans), 1))
    values = luna16_sensitivities(rate, sensitivity) if lesion_count else np.full(7, np.nan)
    metrics = {f"sensitivity_FPPI_{x:g}": float(v) for x, v in zip(FROC_FALSE_POSITIVES_PER_IMAGE, values)}
    metrics["CPM"] = float(np.mean(values))
    metrics.update(
        num_scans=float(len(scans)), num_nodules=float(lesion_count), num_nodules_hit=float(entry_true.sum()),
        num_false_positives=float((~entry_true).sum()), num_duplicate_hits_ignored=float(duplicates),
    )
    return Luna16Result(
        metrics=metrics, false_positives_per_image=rate, sensitivity=sensitivity,
        entry_scan=np.concatenate(entry_scans) if entry_scans else np.zeros(0, int),
        entry_score=entry_score, entry_true=entry_true, nodules_per_scan=np.asarray(nodule_counts),
    )
