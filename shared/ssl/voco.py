"""VoCo: predict how much of a random target crop lies in each base crop, from crop features alone.

Every crop (base and target, cut by :class:`shared.ssl.voco_crops.VoCoCropsd`) goes through the
encoder; each level's features are averaged over space and concatenated, and an MLP projects them. The
similarity of a target crop to a base crop is ``relu(cos(target, base))``; the loss asks it to equal
their overlap label (Wu et al., CVPR 2024; the released code, Luffy03/VoCo ``models/voco_head.py``):

- positive term, over pairs that overlap: ``Σ y · −log(1 − |y − s| + ε) / Σ y`` (overlap-weighted,
  a steeper form of ``|y − s|``);
- negative term, over pairs that do not: the mean of ``s²``;
- regulariser: the mean of ``relu(cos)²`` over all pairs of base crops of a volume, which pushes
  the base crops' features apart (the base crops never overlap).

``loss = prediction_weight · (positive + negative) + regularization_weight · regulariser``, weights 1
as in VoCo. A momentum teacher (:mod:`shared.ssl.ema`) gives the base crops' features that the
student's target features are compared with (and, ``symmetric``, the other way round, averaged, as
VoCo's code does); without it the base features are the student's own, detached (nnssl's trainer),
and the loss is known not to fall (nnssl issue #22).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.encoders import build_encoder
from shared.encoders.base import Encoder
from shared.ssl.ema import MomentumTeacher

#: ResEnc-L, the paper's pre-training encoder
DEFAULT_ENCODER_SPEC: dict[str, Any] = {"name": "resenc", "preset": "paper"}
NORMS = ("layer", "batch", "none")
EPSILON = 1e-6


def pooled_features(features: list[torch.Tensor]) -> torch.Tensor:
    """Averages every level over space and concatenates the levels.

    Args:
        features: an encoder's output, fine → coarse, each (B, C_l, X_l, Y_l, Z_l).

    Returns:
        (B, Σ C_l) features.
    """
    return torch.cat([level.flatten(2).mean(-1) for level in features], dim=1)


class ProjectionHead(nn.Module):
    """VoCo's projector: ``hidden_layers`` × (linear, norm, ReLU), then a linear layer.

    Args:
        in_channels: pooled feature channels (the sum over encoder levels).
        hidden_channels: width of the hidden layers.
        out_channels: width of the embedding.
        hidden_layers: number of hidden layers (VoCo: 2).
        norm: ``"batch"`` normalises each feature over the crops of the batch (VoCo's code), which
            centres the embeddings so that unrelated crops start near cosine 0; ``"layer"`` normalises
            each crop's vector on its own (what nnssl's ``InstanceNorm1d`` on (N, C) does): a crop's
            embedding then does not depend on the batch, but all cosines start near 1 (docs/voco.md);
            ``"none"``. No affine parameters, no running statistics.

    Shape:
        (N, in_channels) → (N, out_channels).
    """

    def __init__(self, in_channels: int, *, hidden_channels: int = 2048, out_channels: int = 2048,
                 hidden_layers: int = 2, norm: str = "batch"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(hidden_layers):
            layers.append(nn.Linear(width, hidden_channels))
            if norm == "layer":
                layers.append(nn.LayerNorm(hidden_channels, elementwise_affine=False))
            elif norm == "batch":
                layers.append(nn.BatchNorm1d(hidden_channels, affine=False, track_running_stats=False))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_channels
        layers.append(nn.Linear(width, out_channels))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def overlap_similarity(targets: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """``relu(cos)`` of every target embedding with every base embedding of the same volume.

    Shape:
        targets: (B, T, D); bases: (B, N, D); output: (B, T, N).
    """
    return F.relu(F.cosine_similarity(targets[:, :, None, :], bases[:, None, :, :], dim=-1))


def prediction_loss(similarity: torch.Tensor, overlaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VoCo's prediction loss: overlap-weighted ``−log(1 − |y − s|)`` on overlapping pairs, ``s²`` elsewhere.

    Args:
        similarity: predicted overlaps (``relu(cos)``, in [0, 1]).
        overlaps: the labels.

    Returns:
        (positive, negative) scalars; a term without pairs is 0.

    Shape:
        similarity, overlaps: (B, T, N).
    """
    distance = (overlaps - similarity).abs()
    positive = -(overlaps * torch.log(1.0 - distance + EPSILON)).sum() / overlaps.sum().clamp_min(EPSILON)
    apart = (overlaps == 0).to(similarity.dtype)
    negative = (apart * similarity**2).sum() / apart.sum().clamp_min(1.0)
    return positive, negative


def base_regularization(bases: torch.Tensor) -> torch.Tensor:
    """Mean ``relu(cos)²`` over the pairs of distinct base crops of each volume (0 for one base crop).

    Shape:
        bases: (B, N, D).
    """
    similarity = F.relu(F.cosine_similarity(bases[:, :, None, :], bases[:, None, :, :], dim=-1))
    pairs = torch.triu(torch.ones_like(similarity[0], dtype=torch.bool), diagonal=1)
    if not pairs.any():
        return similarity.sum() * 0.0
    return (similarity[:, pairs] ** 2).mean()


class VolumeContrast(nn.Module):
    """VoCo pre-training around an encoder: projector, momentum teacher and loss.

    Args:
        in_channels: input channels of the crops.
        encoder_spec: a spec for :func:`shared.encoders.build_encoder` or a built encoder (ResEnc-L by
            default); it is the student's and what ``export_encoder`` saves (``self.encoder``, keys
            as for MAE).
        hidden_channels, out_channels, hidden_layers, norm: the projector (:class:`ProjectionHead`).
        teacher_momentum: momentum of the EMA teacher (encoder + projector); ``None`` trains without
            a teacher (the base features are the student's, detached), the ablation.
        symmetric: with a teacher, average ``s(student target, teacher base)`` with ``s(teacher
            target, student base)`` as VoCo's code does; else only the first.
        prediction_weight: weight of the prediction loss (positive + negative terms).
        regularization_weight: weight of the base-crop regulariser.

    The teacher must be updated after every optimizer step: list
    ``MomentumUpdate(model.teacher)`` (:mod:`shared.ssl.ema`) among the trainer's handlers.
    """

    def __init__(self, in_channels: int, *, encoder_spec: dict[str, Any] | Encoder | None = None,
                 hidden_channels: int = 2048, out_channels: int = 2048, hidden_layers: int = 2, norm: str = "batch",
                 teacher_momentum: float | None = 0.9, symmetric: bool = True, prediction_weight: float = 1.0,
                 regularization_weight: float = 1.0):
        super().__init__()
        self.encoder = build_encoder(DEFAULT_ENCODER_SPEC if encoder_spec is None else encoder_spec, in_channels)
        pooled_channels = sum(int(level["channels"]) for level in self.encoder.feature_info)
        self.projector = ProjectionHead(pooled_channels, hidden_channels=hidden_channels, out_channels=out_channels,
                                        hidden_layers=hidden_layers, norm=norm)
        self.teacher: MomentumTeacher | None = None
        if teacher_momentum is not None:
            student = nn.ModuleDict({"encoder": self.encoder, "projector": self.projector})
            self.teacher = MomentumTeacher(student, momentum=teacher_momentum)
        self.symmetric = bool(symmetric)
        self.prediction_weight, self.regularization_weight = float(prediction_weight), float(regularization_weight)

    @staticmethod
    def embed(encoder: nn.Module, projector: nn.Module, crops: torch.Tensor) -> torch.Tensor:
        """Crops → embeddings: pooled features of every encoder level through the projector.

        Shape:
            crops: (N, C, X, Y, Z); output: (N, out_channels).
        """
        return projector(pooled_features(encoder(crops)))

    def teacher_embed(self, crops: torch.Tensor) -> torch.Tensor:
        """The teacher's embeddings, without gradient. Shape: (N, C, X, Y, Z) → (N, out_channels)."""
        assert self.teacher is not None
        with torch.no_grad():
            return self.embed(self.teacher.module["encoder"], self.teacher.module["projector"], crops)

    def forward(self, base_crops: torch.Tensor, target_crops: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
                overlaps: torch.Tensor | None = None, *,
                return_similarity: bool = False) -> dict[str, torch.Tensor] | torch.Tensor:
        """Embeds the crops and scores the predicted overlaps.

        Three calls:

        - ``model(base_crops, target_crops, overlaps)``: the losses;
        - ``model(base_crops, {"target_crops": ..., "overlaps": ...})``: the trainer's call, the
          detectors' ``network(inputs, targets)`` (:func:`prepare_voco_batch`); the losses and the
          predicted overlaps, which the trainer drops and :class:`shared.ssl.voco_previews.VoCoPreviews`
          draws;
        - ``model(crops)`` with (B, C, X, Y, Z) crops: the student's pooled encoder features of each crop,
          (B, Σ C_l): what the encoder learnt, independent of the batch (the projector's batch norm is
          not). The Model Zoo's ``verify_net_in_out`` and the traced export use this call.

        Args:
            base_crops: each volume's base crops.
            target_crops: each volume's target crops, or the mapping of them and the overlaps.
            overlaps: the labels, target crop × base crop.
            return_similarity: also return the predicted overlaps (detached) under ``"similarity"``.

        Returns:
            ``{"loss", "positive_loss", "negative_loss", "regularization_loss"}`` scalars (and
            ``"similarity"`` (B, T, N) when asked or given a mapping).

        Shape:
            base_crops: (B, N, C, X, Y, Z); target_crops: (B, T, C, X, Y, Z); overlaps: (B, T, N).
        """
        if target_crops is None and overlaps is None and base_crops.ndim == 5:
            return pooled_features(self.encoder(base_crops))
        if isinstance(target_crops, Mapping):
            target_crops, overlaps, return_similarity = target_crops["target_crops"], target_crops["overlaps"], True
        if target_crops is None or overlaps is None:
            raise ValueError("VolumeContrast needs base crops, target crops and overlaps (or crops (B, C, X, Y, Z) "
                             f"alone for their features), got base crops {tuple(base_crops.shape)} alone")
        batch, num_bases, num_targets = self._check(base_crops, target_crops, overlaps)
        crops = torch.cat([base_crops.flatten(0, 1), target_crops.flatten(0, 1)])
        student = self.embed(self.encoder, self.projector, crops)
        student_bases = student[: batch * num_bases].unflatten(0, (batch, num_bases))
        student_targets = student[batch * num_bases:].unflatten(0, (batch, num_targets))
        if self.teacher is None:
            similarity = overlap_similarity(student_targets, student_bases.detach())
        else:
            teacher_crops = crops if self.symmetric else crops[: batch * num_bases]
            teacher = self.teacher_embed(teacher_crops)
            teacher_bases = teacher[: batch * num_bases].unflatten(0, (batch, num_bases))
            similarity = overlap_similarity(student_targets, teacher_bases)
            if self.symmetric:
                teacher_targets = teacher[batch * num_bases:].unflatten(0, (batch, num_targets))
                similarity = 0.5 * (similarity + overlap_similarity(teacher_targets, student_bases))
        positive, negative = prediction_loss(similarity, overlaps.to(similarity.dtype))
        regularization = base_regularization(student_bases)
        loss = self.prediction_weight * (positive + negative) + self.regularization_weight * regularization
        losses = {"loss": loss, "positive_loss": positive.detach(), "negative_loss": negative.detach(),
                  "regularization_loss": regularization.detach()}
        if return_similarity:
            losses["similarity"] = similarity.detach()
        return losses

    @staticmethod
    def _check(base_crops: torch.Tensor, target_crops: torch.Tensor, overlaps: torch.Tensor) -> tuple[int, int, int]:
        if base_crops.ndim != 6 or target_crops.ndim != 6:
            raise ValueError(
                f"expected base and target crops (B, N, C, X, Y, Z), got {tuple(base_crops.shape)} and "
                f"{tuple(target_crops.shape)}; batch VoCoCropsd's output with a DataLoader"
            )
        batch, num_bases, num_targets = base_crops.shape[0], base_crops.shape[1], target_crops.shape[1]
        if tuple(overlaps.shape) != (batch, num_targets, num_bases) or target_crops.shape[0] != batch:
            raise ValueError(
                f"overlaps {tuple(overlaps.shape)} must be (B, T, N) = {(batch, num_targets, num_bases)} for base "
                f"crops {tuple(base_crops.shape)} and target crops {tuple(target_crops.shape)}"
            )
        return batch, num_bases, num_targets


def voco_forward(model: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Trainer step for :class:`VolumeContrast`: the batched output of ``VoCoCropsd`` goes in."""
    return model(batch["base_crops"].to(device), batch["target_crops"].to(device), batch["overlaps"].to(device))


def prepare_voco_batch(batch: dict[str, Any], device: str | torch.device | None = None, non_blocking: bool = False,
                       **kwargs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``prepare_batch`` of :class:`shared.engines.trainer.LossDictTrainer` for :class:`VolumeContrast`.

    Returns:
        ``(base_crops, {"target_crops", "overlaps"})``: the trainer calls ``network(base_crops, targets)``.

    Shape:
        batch: ``VoCoCropsd``'s keys, batched: base_crops (B, N, C, X, Y, Z), target_crops
        (B, T, C, X, Y, Z), overlaps (B, T, N).
    """
    def move(value: torch.Tensor) -> torch.Tensor:
        return value.to(device, non_blocking=non_blocking)

    return move(batch["base_crops"]), {"target_crops": move(batch["target_crops"]), "overlaps": move(batch["overlaps"])}
