"""What a synthetic task produces per case, and what describes a task to the data-set writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Case:
    """One generated scan with its ground truth.

    Attributes:
        image: (C, X, Y, Z) the channels on one grid (int16: Hounsfield units for CT, scanner-like integers for MRI).
        affine: (4, 4) voxel-index → RAS-mm matrix.
        instances: (X, Y, Z) int16 instance map, 0 background, 1..N objects.
        labels: class of instance ``i + 1`` at position ``i``.
        segmentations: label set name → (X, Y, Z) uint8 semantic label map (0 background, k the
            ``TaskSpec.label_sets[name][k - 1]`` class), for supervised multi-dataset pre-training.
    """

    image: np.ndarray
    affine: np.ndarray
    instances: np.ndarray
    labels: list[int] = field(default_factory=list)
    segmentations: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A synthetic task: its classes and channels, its preset grids, and its case generator.

    Attributes:
        name: the task's name on the command line.
        classes: class names, index = class id.
        channels: one name per image channel.
        modality: ``"CT"`` or ``"MRI"``.
        grids: preset name → (shape (X, Y, Z), spacing mm).
        counts: preset name → cases per split (training, validation, test, unlabelled).
        generate: ``generate(rng, shape, spacing, preset, empty) -> Case``; ``empty`` asks for a scan
            without objects.
        credits: where the real data inside the task come from, and their licences.
        label_sets: label set name → its class names (labels 1..K of ``Case.segmentations[name]``).
    """

    name: str
    classes: tuple[str, ...]
    channels: tuple[str, ...]
    modality: str
    grids: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]]
    counts: dict[str, tuple[int, int, int, int]]
    generate: Callable[..., Case]
    credits: str
    label_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
