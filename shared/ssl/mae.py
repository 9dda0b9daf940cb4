"""Masked autoencoder pre-training for CNNs: hide blocks, reconstruct them, score only the hidden part.

The paper's MAE (after nnssl's "Revisiting MAE pre-training for 3D medical image segmentation"):
75% of 16³-voxel blocks are zeroed in the input, a dense U-Net reconstructs the full volume, and the
loss is the mean squared error over the masked voxels only — the visible voxels are copied trivially
and would only dilute the signal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shared.ssl.masking import block_mask


def masked_mse_loss(reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over masked voxels only (mean over masked voxels × channels).

    Args:
        reconstruction: network output.
        target: the clean input.
        mask: True (or 1) where a voxel was hidden; broadcast over channels.

    Returns:
        Scalar loss.

    Shape:
        reconstruction, target: (B, C, X, Y, Z); mask: (B, 1, X, Y, Z) or (B, C, X, Y, Z).
    """
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ")
    weight = mask.to(reconstruction.dtype).expand_as(reconstruction)
    count = weight.sum()
    if count == 0:
        raise ValueError("the mask hides no voxel: the masked MSE is undefined")
    return ((reconstruction - target) ** 2 * weight).sum() / count


class BlockMaskedPretraining(nn.Module):
    """What the block-masking methods (MAE, SparK) share: the wrapped network, the mask draws and their state.

    Args:
        network: the network being pre-trained; its ``encoder`` attribute is what gets exported.
        block_size: mask block edge in voxels, one int or one per axis.
        mask_ratio: fraction of blocks hidden per sample.
        seed: seed of the mask generator (masks are drawn on the CPU, so runs are reproducible
            whatever the device); ``None`` draws from torch's global generator. The generator's state
            is part of the state dict, so a resumed run draws the masks the uninterrupted run would;
            give each distributed rank its own seed.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        block_size: int | Sequence[int] = 16,
        mask_ratio: float = 0.75,
        seed: int | None = None,
    ):
        super().__init__()
        self.network = network
        self.block_size = block_size
        self.mask_ratio = float(mask_ratio)
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(int(seed))

    def get_extra_state(self) -> torch.Tensor:
        """The mask generator's state (empty without a seed), saved with the weights."""
        return self.generator.get_state() if self.generator is not None else torch.zeros(0, dtype=torch.uint8)

    def set_extra_state(self, state: torch.Tensor) -> None:
        if self.generator is not None and state.numel():
            self.generator.set_state(state)

    @property
    def encoder(self) -> nn.Module:
        """The wrapped network's encoder (what ``export_encoder`` saves)."""
        return self.network.encoder

    def draw_mask(self, images: torch.Tensor) -> torch.Tensor:
        """Draws a fresh block mask for a batch.

        Args:
            images: the batch, only its shape and device are used.

        Returns:
            Boolean mask, True where hidden.

        Shape:
            images: (B, C, X, Y, Z); output: (B, 1, X, Y, Z).
        """
        return block_mask(
            images.shape[0],
            images.shape[2:],
            block_size=self.block_size,
            mask_ratio=self.mask_ratio,
            generator=self.generator,
            device=images.device,
        )

    def _checked_mask(self, images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if images.ndim != 5:
            raise ValueError(f"expected images (B, C, X, Y, Z), got shape {tuple(images.shape)}")
        if mask is None:
            mask = self.draw_mask(images)
        return mask.to(device=images.device, dtype=torch.bool)


class MaskedAutoencoder(BlockMaskedPretraining):
    """Wraps a reconstruction network (C → C channels) with block masking and the masked MSE.

    Args:
        network: dense network mapping (B, C, X, Y, Z) to (B, C, X, Y, Z), e.g. the ResEnc U-Net;
            its ``encoder`` attribute is what gets exported after pre-training.
        block_size: mask block edge in voxels, one int or one per axis.
        mask_ratio: fraction of blocks hidden per sample.
        seed: seed of the mask generator (see :class:`BlockMaskedPretraining`).
    """

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Masks, reconstructs and scores a batch.

        Args:
            images: clean (normalised) input.
            mask: optional precomputed mask (True where hidden); drawn fresh when ``None``.

        Returns:
            ``{"loss": scalar, "reconstruction": (B, C, X, Y, Z), "mask": (B, 1, X, Y, Z) bool}``.

        Shape:
            images: (B, C, X, Y, Z).
        """
        mask = self._checked_mask(images, mask)
        visible = images.masked_fill(mask, 0.0)
        reconstruction = self.network(visible)
        if isinstance(reconstruction, (list, tuple)):
            # deep-supervision networks return the full-resolution output first
            reconstruction = reconstruction[0]
        loss = masked_mse_loss(reconstruction, images, mask)
        return {"loss": loss, "reconstruction": reconstruction, "mask": mask}
