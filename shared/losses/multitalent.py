"""MultiTalent's loss: each sample is scored only on its own data set's output channels.

A data set of kind ``softmax`` gets cross-entropy + soft Dice over its K + 1 channels (background
included in the softmax, left out of the Dice), one of kind ``regions`` binary cross-entropy + soft
Dice over its region channels (nnU-Net's region training). Channels of other data sets never enter a
sample's loss, so a class one data set labels and another leaves as background does not teach the
network that it is background. Dice is pooled over the data set's samples in the batch (batch Dice),
so a patch without foreground does not give the degenerate per-image Dice. The batch loss averages the
data sets' losses weighted by their share of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shared.networks.multitalent import SegmentationTask, read_tasks

SMOOTH = 1e-5


def soft_dice_loss(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 − mean_c (2 Σ p·g + s) / (Σ p + Σ g + s)``, sums over batch and space per channel.

    Args:
        probabilities: (B, C, X, Y, Z) in [0, 1].
        targets: (B, C, X, Y, Z) in {0, 1}.
    """
    axes = [0, *range(2, probabilities.ndim)]
    intersection = (probabilities * targets).sum(axes)
    total = probabilities.sum(axes) + targets.sum(axes)
    return 1 - ((2 * intersection + SMOOTH) / (total + SMOOTH)).mean()


def hard_dice(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the batch Dice of binary maps; channels empty in both are left out (NaN if all).

    Args:
        predicted: (B, C, X, Y, Z) booleans.
        targets: (B, C, X, Y, Z) booleans.
    """
    axes = [0, *range(2, predicted.ndim)]
    intersection = (predicted & targets).sum(axes).double()
    total = predicted.sum(axes).double() + targets.sum(axes).double()
    present = total > 0
    if not bool(present.any()):
        return torch.tensor(float("nan"), dtype=torch.float64)
    return (2 * intersection[present] / total[present]).mean()


def deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's weights of the outputs fine → coarse: 1/2^l, the coarsest 0 (with more than one), summing to 1."""
    weights = [0.5 ** level for level in range(levels)]
    if levels > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [weight / total for weight in weights]


def downsample_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A (B, 1, X, Y, Z) label map at a coarser output's size, by nearest neighbour (labels stay labels)."""
    if tuple(labels.shape[2:]) == tuple(size):
        return labels
    return F.interpolate(labels.float(), size=tuple(size), mode="nearest-exact").to(labels.dtype)


def region_targets(labels: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, 1, X, Y, Z) label map → (B, R, X, Y, Z) float, channel r = "the label is in ``regions[r]``"."""
    return torch.cat([torch.isin(labels, torch.as_tensor(list(r), device=labels.device)) for r in regions], 1).float()


def task_loss(task: SegmentationTask, logits: torch.Tensor, labels: torch.Tensor, *, dice_weight: float = 1.0,
              ce_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and hard Dice (detached) of one data set's samples on its own channels.

    Args:
        task: the data set.
        logits: (B_d, task.out_channels, X, Y, Z).
        labels: (B_d, 1, X, Y, Z) integer map in the data set's labels (0 background).

    Returns:
        ``(loss, dice)``: a scalar with gradient, and the mean foreground Dice of the prediction.

    Raises:
        ValueError: a label beyond the task's classes.
    """
    labels = labels.long()
    if labels.numel() and (int(labels.max()) > len(task.classes) or int(labels.min()) < 0):
        raise ValueError(f"task {task.name!r}: label map holds {int(labels.max())} but the task has "
                         f"{len(task.classes)} classes ({', '.join(task.classes)})")
    if task.kind == "softmax":
        ce = F.cross_entropy(logits, labels[:, 0])
        probabilities = logits.softmax(1)[:, 1:]
        onehot = F.one_hot(labels[:, 0], task.out_channels).movedim(-1, 1)[:, 1:].float()
    else:
        onehot = region_targets(labels, task.label_regions)
        ce = F.binary_cross_entropy_with_logits(logits, onehot)
        probabilities = logits.sigmoid()
    loss = ce_weight * ce + dice_weight * soft_dice_loss(probabilities, onehot)
    return loss, task_dice(task, logits.detach(), labels, onehot.bool())


def task_dice(task: SegmentationTask, logits: torch.Tensor, labels: torch.Tensor,
              targets: torch.Tensor | None = None) -> torch.Tensor:
    """Hard foreground Dice of one data set's prediction: argmax classes (``softmax``) or logits > 0
    (``regions``) against the labels, the mean over the channels present in either (NaN if none).

    Args:
        task: the data set.
        logits: (B, task.out_channels, X, Y, Z).
        labels: (B, 1, X, Y, Z) integer map in the data set's labels.
        targets: the labels' (B, C, X, Y, Z) foreground channels when the caller has them.
    """
    if task.kind == "softmax":
        predicted = F.one_hot(logits.argmax(1), task.out_channels).movedim(-1, 1)[:, 1:].bool()
        if targets is None:
            targets = F.one_hot(labels[:, 0].long(), task.out_channels).movedim(-1, 1)[:, 1:].bool()
    else:
        predicted = logits > 0
        if targets is None:
            targets = region_targets(labels, task.label_regions).bool()
    return hard_dice(predicted, targets)


class MultiTalentLoss(nn.Module):
    """Per-data-set CE/BCE + Dice on each sample's own channels, averaged by batch share.

    Args:
        tasks: the network's tasks (same order, so the channel blocks agree).
        dice_weight: weight of the Dice term.
        ce_weight: weight of the (binary) cross-entropy term.
    """

    def __init__(self, tasks: Sequence[SegmentationTask | dict], *, dice_weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__()
        self.tasks = read_tasks(tasks)
        self.dice_weight, self.ce_weight = float(dice_weight), float(ce_weight)
        self.slices, start = [], 0
        for task in self.tasks:
            self.slices.append(slice(start, start + task.out_channels))
            start += task.out_channels
        self.out_channels = start

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Args:
            logits: (B, ΣC_d, X, Y, Z) from :class:`shared.networks.multitalent.MultiTalentNetwork`.
            labels: (B, 1, X, Y, Z) integer maps, each in its own data set's labels.
            indices: task index per sample.

        Returns:
            ``{"loss"}`` and, per data set present in the batch, ``"loss/<name>"`` and ``"dice/<name>"``
            (both detached).
        """
        if logits.shape[1] != self.out_channels or len(indices) != logits.shape[0]:
            raise ValueError(f"expected logits with {self.out_channels} channels and one task index per sample, got "
                             f"{tuple(logits.shape)} and {len(indices)} indices")
        batch = logits.shape[0]
        losses: dict[str, torch.Tensor] = {}
        total = logits.new_zeros(())
        for index in sorted(set(indices)):
            task = self.tasks[index]
            positions = torch.as_tensor([b for b, i in enumerate(indices) if i == index], device=logits.device)
            loss, dice = task_loss(task, logits[positions, self.slices[index]], labels[positions],
                                   dice_weight=self.dice_weight, ce_weight=self.ce_weight)
            total = total + loss * (len(positions) / batch)
            losses[f"loss/{task.name}"] = loss.detach()
            losses[f"dice/{task.name}"] = dice.to(logits.dtype)
        return {"loss": total, **losses}
