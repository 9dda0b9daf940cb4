"""Watching VoCo learn: the crop layout and the true vs predicted overlap matrix as TensorBoard images.

Like :mod:`shared.ssl.previews`, :class:`VoCoPreviews` is a ``train#handlers`` entry that draws what the
trainer's forward produced (and, for a hand-written step, that step: only scalar losses leave it);
every ``every`` iterations it draws the batch's first volume:

- the layout: the middle Z slice of the region (stitched from the base crops, which tile it) with the
  base grid in blue and each target crop's XY outline in its own colour;
- the overlaps: the labels (left) and the predicted similarities (right), one row per target crop
  and one column per base crop, black 0 to white 1, 8 pixels per cell, a grey column between.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from shared.ssl.previews import TrainingPreviews

LAYOUT_TAG = "voco/crop_layout"
OVERLAP_TAG = "voco/overlaps_true_predicted"
GRID_COLOUR = (0.2, 0.4, 1.0)
TARGET_COLOURS = ((1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (1.0, 0.9, 0.1), (1.0, 0.3, 1.0), (0.1, 1.0, 1.0), (1.0, 0.6, 0.1))


def _outline(picture: np.ndarray, start: np.ndarray, size: np.ndarray, colour: tuple[float, ...]) -> None:
    """Draws a one-pixel rectangle border (clipped to the picture) in place. picture: (3, X, Y)."""
    (x0, y0), (x1, y1) = start, start + size - 1
    height, width = picture.shape[1:]
    xs, ys = slice(max(x0, 0), min(x1, height - 1) + 1), slice(max(y0, 0), min(y1, width - 1) + 1)
    for row in (x0, x1):
        if 0 <= row < height:
            picture[:, row, ys] = np.asarray(colour)[:, None]
    for column in (y0, y1):
        if 0 <= column < width:
            picture[:, xs, column] = np.asarray(colour)[:, None]


def crop_layout_image(base_crops: torch.Tensor, base_positions: torch.Tensor,
                      target_positions: torch.Tensor) -> np.ndarray:
    """The region's middle Z slice with the base grid and the target crops' outlines, in RGB.

    Args:
        base_crops: one volume's base crops (first channel shown).
        base_positions: their start corners relative to the region.
        target_positions: the target crops' start corners, same frame (may lie outside the region).

    Returns:
        (3, X, Y) float32 picture in [0, 1] (CHW), covering the region and every target crop.

    Shape:
        base_crops: (N, C, x, y, z); base_positions: (N, 3); target_positions: (T, 3).
    """
    crops = base_crops[:, 0].detach().float().cpu().numpy()
    size = np.asarray(crops.shape[1:])
    bases, targets = base_positions.cpu().numpy(), target_positions.cpu().numpy()
    region = (bases + size).max(0)
    region_volume = np.zeros(region, dtype=np.float32)
    for crop, start in zip(crops, bases):
        region_volume[tuple(slice(a, a + s) for a, s in zip(start, size))] = crop
    middle = region_volume[..., region[2] // 2]
    low, high = float(middle.min()), float(middle.max())
    middle = np.clip((middle - low) / (high - low), 0, 1) if high > low else np.zeros_like(middle)
    origin = np.minimum(targets[:, :2].min(0), 0)
    extent = np.maximum((targets[:, :2] + size[:2]).max(0), region[:2]) - origin
    picture = np.zeros((3, *extent), dtype=np.float32)
    picture[:, -origin[0]:-origin[0] + region[0], -origin[1]:-origin[1] + region[1]] = middle
    for start in bases:
        _outline(picture, start[:2] - origin, size[:2], GRID_COLOUR)
    for index, start in enumerate(targets):
        _outline(picture, start[:2] - origin, size[:2], TARGET_COLOURS[index % len(TARGET_COLOURS)])
    return picture


def overlap_matrix_image(overlaps: torch.Tensor, similarity: torch.Tensor, *, cell: int = 8) -> np.ndarray:
    """Labels beside predictions, one cell per (target, base) pair.

    Args:
        overlaps: one volume's labels.
        similarity: the predicted overlaps for the same pairs.
        cell: pixels per matrix entry.

    Returns:
        (1, T * cell, (2 N + 1) * cell) float32 picture in [0, 1]; the middle column is grey 0.5.

    Shape:
        overlaps, similarity: (T, N).
    """
    if overlaps.shape != similarity.shape:
        raise ValueError(f"overlaps {tuple(overlaps.shape)} and similarity {tuple(similarity.shape)} differ")
    true, predicted = (np.clip(m.detach().float().cpu().numpy(), 0, 1) for m in (overlaps, similarity))
    gap = np.full((true.shape[0], 1), 0.5, dtype=np.float32)
    matrix = np.concatenate([true, gap, predicted], axis=1)
    return np.kron(matrix, np.ones((cell, cell), dtype=np.float32))[None].astype(np.float32)


class VoCoPreviews(TrainingPreviews):
    """Trainer handler that logs the crop layout and the overlaps every ``every`` iterations.

    List it in the bundle's ``train#handlers`` (:meth:`attach`: it draws what the iteration of
    :class:`shared.engines.trainer.LossDictTrainer` produced, with :func:`shared.ssl.voco.prepare_voco_batch`);
    ``forward`` and calling it with the engine remain for a hand-written step.

    Args:
        log_dir: TensorBoard folder (the trainer's is ``output_dir/logs``).
        every: iterations between pictures; the first iteration is always shown.
    """

    def log_forward(self, engine: Any) -> None:
        """Draw after the iteration's forward.

        At ``FORWARD_COMPLETED`` the batch (crops, positions, overlaps, on the CPU) is
        ``engine.state.batch`` and the predicted overlaps are ``engine.state.output["pred"]["similarity"]``.
        """
        self(engine)
        if self._due():
            self.log(engine.state.batch, engine.state.output["pred"]["similarity"], self.iteration)

    def forward(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """Run VoCo on the batch's crops; only the scalar losses leave the step."""
        due = self._due()
        losses = model(batch["base_crops"].to(device), batch["target_crops"].to(device),
                       batch["overlaps"].to(device), return_similarity=due)
        if due:
            self.log(batch, losses.pop("similarity"), self.iteration)
        return losses

    def log(self, batch: dict[str, Any], similarity: torch.Tensor, step: int) -> None:
        """Write both pictures of the batch's first volume.

        Shape:
            batch: ``VoCoCropsd``'s keys, batched; similarity: (B, T, N).
        """
        layout = crop_layout_image(batch["base_crops"][0], batch["base_positions"][0], batch["target_positions"][0])
        self.writer.add_image(LAYOUT_TAG, layout, step, dataformats="CHW")
        self.writer.add_image(OVERLAP_TAG, overlap_matrix_image(batch["overlaps"][0], similarity[0]), step,
                              dataformats="CHW")
        self.writer.flush()
