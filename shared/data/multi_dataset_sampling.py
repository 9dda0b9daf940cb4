"""Drawing training cases from several data sets of very different sizes (MultiTalent's sampling).

Each case of data set d is drawn with a weight ``N_d ** -exponent``, N_d the data set's number of
training cases; so a data set is drawn with probability ∝ ``N_d ** (1 - exponent)``. MultiTalent's
``exponent = 0.5`` weights every case by 1/√N_d: a data set of 100 cases is seen more often per case than
one of 5,000, yet the large one is still drawn √50 ≈ 7 times as often in all. ``exponent = 1`` draws
every data set equally often, ``0`` every case equally often (data sets in proportion to their size).

A draw is a pure function of ``(seed, rank, index)`` (the global sample index of
:class:`shared.engines.sampler.ResumableBatchSampler`), so a resumed run draws the same cases and
DataLoader workers and ranks never repeat each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import Randomizable
from torch.utils.data import Dataset

MULTITALENT_EXPONENT = 0.5


def dataset_probabilities(sizes: Mapping[str, int], exponent: float = MULTITALENT_EXPONENT) -> dict[str, float]:
    """Probability of drawing each data set when each of its cases weighs ``N_d ** -exponent``.

    Args:
        sizes: data set id → number of training cases (positive).
        exponent: the case weight's exponent (0.5: MultiTalent's 1/√N_d per case).

    Returns:
        data set id → probability ∝ ``N_d ** (1 - exponent)``, summing to 1.
    """
    if not sizes or any(int(n) < 1 for n in sizes.values()):
        raise ValueError(f"sizes: expected a positive number of cases per data set, got {dict(sizes)}")
    weights = {name: float(n) ** (1.0 - float(exponent)) for name, n in sizes.items()}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


class MultiDatasetSampler:
    """Draws ``(data set id, case index)`` for a global sample index, reproducibly.

    Args:
        sizes: data set id → number of training cases.
        exponent: case weight ``N_d ** -exponent`` (see the module docstring).
        seed: base seed.
        rank: distributed rank (ranks draw different samples for the same index).
    """

    def __init__(self, sizes: Mapping[str, int], *, exponent: float = MULTITALENT_EXPONENT, seed: int = 0,
                 rank: int = 0):
        self.sizes = {name: int(n) for name, n in sizes.items()}
        self.probabilities = dataset_probabilities(self.sizes, exponent)
        self.names = list(self.probabilities)
        self._cumulative = np.cumsum([self.probabilities[name] for name in self.names])
        self.exponent, self.seed, self.rank = float(exponent), int(seed), int(rank)

    def generator(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` (also seeds the sample's transforms)."""
        if index < 0:
            raise IndexError(f"sample indices start at 0, got {index}")
        return np.random.default_rng([self.seed, self.rank, int(index)])

    def draw(self, index: int, generator: np.random.Generator | None = None) -> tuple[str, int]:
        """The data set and case of sample ``index``: the data set by its probability, then a case uniformly."""
        generator = self.generator(index) if generator is None else generator
        position = int(np.searchsorted(self._cumulative, generator.random() * self._cumulative[-1], side="right"))
        name = self.names[min(position, len(self.names) - 1)]
        return name, int(generator.integers(self.sizes[name]))


class MultiDatasetSampleDataset(Dataset):
    """Training samples from several data sets: sample ``index`` is a drawn case through the chain.

    The chain receives the datalist entry (``{"image", "label", ...}``) with ``"dataset"`` (the id)
    and ``"in_channels"`` added, and its random state is set from the sample's generator, so the
    sample is a pure function of ``(seed, rank, index)``. Iterate it with a sampler that hands out
    global indices (``ResumableBatchSampler``); its length is ``samples_per_epoch``.

    Args:
        datasets: data set id → its training entries (``read_multi_datalist(...)["datasets"][id]["training"]``),
            or the whole checked ``datasets`` object.
        transform: the sample chain (loading, padding channels, patch sampling, augmentation).
        samples_per_epoch: the length reported to a DataLoader.
        exponent, seed, rank: see :class:`MultiDatasetSampler`.
    """

    def __init__(self, datasets: Mapping[str, Sequence[dict[str, Any]] | Mapping[str, Any]],
                 transform: Callable[[dict[str, Any]], dict[str, Any]], *, samples_per_epoch: int = 250,
                 exponent: float = MULTITALENT_EXPONENT, seed: int = 0, rank: int = 0):
        self.entries, self.channels = {}, {}
        for name, value in datasets.items():
            entries = value["training"] if isinstance(value, Mapping) else value
            self.entries[name] = list(entries)
            self.channels[name] = int(value["in_channels"]) if isinstance(value, Mapping) else None
        self.sampler = MultiDatasetSampler({name: len(e) for name, e in self.entries.items()}, exponent=exponent,
                                           seed=seed, rank=rank)
        self.transform, self.samples_per_epoch = transform, int(samples_per_epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        generator = self.sampler.generator(index)
        name, case = self.sampler.draw(index, generator)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed=int(generator.integers(2**31 - 1)))
        entry = {**self.entries[name][case], "dataset": name}
        if self.channels[name] is not None:
            entry["in_channels"] = self.channels[name]
        return self.transform(entry)
