"""Watching a masked autoencoder learn: reconstructions in TensorBoard during training.

The trainer logs only the scalar losses, so the reconstruction and the mask are drawn by a handler:
:class:`ReconstructionPreviews` is a ``train#handlers`` entry that, every ``every`` iterations, writes
one picture of what the iteration's forward produced: the middle Z slice of the first sample as input,
masked input and reconstruction side by side, all three in the input's intensity window. (Its
``forward`` remains the step of a hand-written loop, returning only the loss.)
"""

from __future__ import annotations

import os
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from torch import nn

TAG = "reconstruction/input_masked_reconstruction"


def preview_image(image: torch.Tensor, mask: torch.Tensor, reconstruction: torch.Tensor) -> np.ndarray:
    """Input, masked input and reconstruction of one slice side by side, scaled to [0, 1].

    Args:
        image: the clean input of one sample and channel.
        mask: True where hidden.
        reconstruction: the network's output for the same sample and channel.

    Returns:
        (1, X, 3 * Y) float32 picture (CHW).

    Shape:
        image, mask, reconstruction: (X, Y, Z); the middle Z slice is shown.
    """
    middle = image.shape[-1] // 2
    panels = [image[..., middle], image.masked_fill(mask, 0.0)[..., middle], reconstruction[..., middle]]
    panels = [panel.detach().float().cpu().numpy() for panel in panels]
    low, high = float(panels[0].min()), float(panels[0].max())
    scale = 1.0 / (high - low) if high > low else 1.0
    picture = np.concatenate([np.clip((panel - low) * scale, 0.0, 1.0) for panel in panels], axis=1)
    return picture[None].astype(np.float32)


class TrainingPreviews:
    """Base of the trainer handlers that draw TensorBoard pictures every ``every`` iterations.

    It keeps the iteration count, the schedule (rank 0 only; the first iteration and every ``every``-th)
    and the lazily opened writer; a subclass draws in :meth:`log_forward`, which :meth:`attach` calls
    after each forward of :class:`shared.engines.trainer.LossDictTrainer`.

    Args:
        log_dir: TensorBoard folder (the trainer's is ``output_dir/logs``).
        every: iterations between pictures; the first iteration is always shown.
    """

    def __init__(self, log_dir: str | os.PathLike, *, every: int = 100):
        if every < 1:
            raise ValueError(f"every must be a positive number of iterations, got {every}")
        self.log_dir, self.every = os.fspath(log_dir), int(every)
        self.iteration = 0
        self._writer = None

    def __call__(self, engine: Any) -> None:
        """Iteration handler: remember which iteration the next step is."""
        self.iteration = int(engine.state.iteration)

    def attach(self, engine: Any) -> None:
        """Trainer handler (``train#handlers``): :meth:`log_forward` after each iteration's forward."""
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.log_forward)

    def log_forward(self, engine: Any) -> None:
        """Draw from ``engine.state`` at ``FORWARD_COMPLETED`` when a picture is due."""
        raise NotImplementedError

    def _due(self) -> bool:
        return idist.get_rank() == 0 and (self.iteration == 1 or self.iteration % self.every == 0)

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir, filename_suffix=".previews")
        return self._writer


class ReconstructionPreviews(TrainingPreviews):
    """Masked-autoencoder training step (``forward``) that logs reconstructions every ``every`` iterations.

    List it in the bundle's ``train#handlers`` (:meth:`attach`: it logs from the iteration of
    :class:`shared.engines.trainer.LossDictTrainer`); ``forward`` and calling it with the engine remain
    for a hand-written step.

    Args:
        log_dir: TensorBoard folder (the trainer's is ``output_dir/logs``).
        every: iterations between pictures; the first iteration is always shown.
    """

    def log_forward(self, engine: Any) -> None:
        """Log from what the iteration's forward produced.

        :class:`shared.engines.trainer.LossDictTrainer` fires ``FORWARD_COMPLETED`` with the images in
        ``engine.state.output["image"]`` and the model's outputs (``"mask"``, ``"reconstruction"``) in
        ``engine.state.output["pred"]``.
        """
        self(engine)
        if self._due():
            output = engine.state.output
            self.log(output["image"], output["pred"]["mask"], output["pred"]["reconstruction"], self.iteration)

    def forward(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """Run the masked autoencoder on the batch's images; only the loss leaves the step."""
        outputs = model(batch["image"].to(device))
        if self._due():
            self.log(batch["image"], outputs["mask"], outputs["reconstruction"], self.iteration)
        return {"loss": outputs["loss"]}

    def log(self, images: torch.Tensor, mask: torch.Tensor, reconstruction: torch.Tensor, step: int) -> None:
        """Write the picture of the batch's first sample and channel.

        Shape:
            images, reconstruction: (B, C, X, Y, Z); mask: (B, 1, X, Y, Z).
        """
        picture = preview_image(images[0, 0], mask[0, 0].to(images.device), reconstruction[0, 0].to(images.device))
        self.writer.add_image(TAG, picture, step, dataformats="CHW")
        self.writer.flush()
