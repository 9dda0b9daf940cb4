"""Sample indices as a pure function of the global position, so a resumed run sees the same batches;
share evaluation data between ranks without repeating items.

Batch ``t`` of rank ``r`` holds samples ``(t * world_size + r) * batch_size + j``; a dataset that seeds
each sample from its index (see :mod:`shared.data.dataset`) then yields the same data whether a run
was interrupted or not, and ranks never repeat each other.
"""

from __future__ import annotations

from typing import Iterator, Sized

from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless batches of global sample indices starting at ``start_iteration``.

    Args:
        batch_size: samples per batch on this rank.
        rank: this process's rank; world_size: the number of processes.
        start_iteration: the first iteration to produce; set it (``sampler.start_iteration = i``)
            before the data loader's iterator is created to resume.
    """

    def __init__(self, batch_size: int, *, rank: int = 0, world_size: int = 1, start_iteration: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.start_iteration = start_iteration

    def __iter__(self) -> Iterator[list[int]]:
        iteration = self.start_iteration
        while True:
            first = (iteration * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))
            iteration += 1


class ShardSampler(Sampler[int]):
    """This rank's share of a finite dataset for evaluation: indices ``rank, rank + world_size, ...``.

    Unlike torch's and MONAI's ``DistributedSampler`` it never pads a share with repeated items (which
    a metric would count twice) and accepts fewer items than ranks (a rank may get none).

    Args:
        length: the dataset's length (or the dataset).
        rank: this process's rank; world_size: the number of processes.
    """

    def __init__(self, length: int | Sized, *, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size ({world_size}), got {rank}")
        self.length = length if isinstance(length, int) else len(length)
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
