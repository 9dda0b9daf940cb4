"""SparK-S3D pre-training: a sparse encoder on the visible blocks, a dense decoder fills in the hidden ones.

The paper's S3D (after SparK, Tian et al. 2023, in nnssl's 3-D form): 75% of the 16³-voxel blocks are
hidden; the encoder runs on the visible voxels only (:mod:`shared.ssl.sparse`, the mask re-applied
after every layer), so it never sees the zeros MAE feeds it. Before the U-Net decoder each encoder
level is densified: a sparse instance norm over the level's active voxels, the hidden positions filled
with a learnable per-level mask token, then a 3³ conv (identity at the finest level) that spreads
context into the filled positions. The loss is the MSE over the hidden voxels only, as MAE's.

The encoder is used through its own modules (nothing renamed), so what is exported is the ordinary
dense encoder, with the keys of MAE's export. Levels coarser than the mask grid are all active and
get no mask token. :class:`SparKReconstructor` is the trained model as a plain network (hidden blocks
read from the input's all-zero blocks), for the bundle's ``inference.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shared.layers.strides import per_axis
from shared.ssl.mae import BlockMaskedPretraining, masked_mse_loss
from shared.ssl.masking import as_triple
from shared.ssl.sparse import ActiveMask, sparse_encode, sparse_instance_norm

MASK_TOKEN_STD = 0.02


def _level_is_masked(stride: int | Sequence[int], block_size: tuple[int, int, int]) -> bool:
    """Whether a level's grid resolves the mask blocks (its stride divides the block on every axis)."""
    return all(block % step == 0 for block, step in zip(block_size, per_axis(stride, 3, "stride")))


class SparKPretraining(BlockMaskedPretraining):
    """Sparse masked autoencoder: sparse encoder, densifying layers, the network's U-Net decoder.

    Args:
        network: a U-Net with ``encoder`` (a project encoder declaring ``feature_info``, run sparsely)
            and ``decoder`` (called on the densified feature list, fine → coarse), e.g.
            ``ResEncUNet(C, C, ...)``; its encoder is what gets exported.
        block_size: mask block edge in voxels, one int or one per axis (16 in the paper); every
            encoder stride must divide it or be a multiple of it.
        mask_ratio: fraction of blocks hidden per sample (0.75).
        seed: seed of the mask generator (see :class:`shared.ssl.mae.BlockMaskedPretraining`).

    Shape:
        ``forward`` takes (B, C, X, Y, Z) with X, Y, Z multiples of the block size and of the
        encoder's coarsest stride.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        block_size: int | Sequence[int] = 16,
        mask_ratio: float = 0.75,
        seed: int | None = None,
    ):
        super().__init__(network, block_size=block_size, mask_ratio=mask_ratio, seed=seed)
        blocks = as_triple(block_size, "block_size")
        levels = network.encoder.feature_info
        # Parameters live outside `network`, so network.state_dict() keeps the dense U-Net's keys.
        self.densify_norms = nn.ModuleList(nn.InstanceNorm3d(level["channels"], affine=True) for level in levels)
        self.densify_convs = nn.ModuleList(
            nn.Identity() if index == 0 else nn.Conv3d(level["channels"], level["channels"], 3, padding=1)
            for index, level in enumerate(levels)
        )
        self.mask_tokens = nn.ParameterDict()
        for index, level in enumerate(levels):
            if _level_is_masked(level["stride"], blocks):
                token = nn.Parameter(torch.zeros(1, level["channels"], 1, 1, 1))
                nn.init.trunc_normal_(token, std=MASK_TOKEN_STD, a=-2 * MASK_TOKEN_STD, b=2 * MASK_TOKEN_STD)
                self.mask_tokens[str(index)] = token

    def densify(self, features: Sequence[torch.Tensor], mask: ActiveMask) -> list[torch.Tensor]:
        """Sparse norm, mask tokens into the hidden positions, then the densifying conv, per level.

        Args:
            features: the sparse encoder's maps, fine → coarse, zero where inactive.
            mask: this batch's active mask.

        Returns:
            Dense maps for the decoder, fine → coarse, same shapes.
        """
        dense = []
        for index, feature in enumerate(features):
            active = mask.at(feature.shape[2:])
            norm = self.densify_norms[index]
            x = sparse_instance_norm(feature, active, weight=norm.weight, bias=norm.bias, eps=norm.eps)
            if str(index) in self.mask_tokens:
                x = torch.where(active, x, self.mask_tokens[str(index)].to(x.dtype))
            dense.append(self.densify_convs[index](x))
        return dense

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Masks, encodes sparsely, densifies, decodes and scores a batch.

        Args:
            images: clean (normalised) input.
            mask: optional precomputed block mask (True where hidden), aligned to ``block_size``;
                drawn fresh when ``None``.

        Returns:
            ``{"loss": scalar, "reconstruction": (B, C, X, Y, Z), "mask": (B, 1, X, Y, Z) bool}``.

        Shape:
            images: (B, C, X, Y, Z).
        """
        mask = self._checked_mask(images, mask)
        reconstruction = self.reconstruct(images, mask)
        loss = masked_mse_loss(reconstruction, images, mask)
        return {"loss": loss, "reconstruction": reconstruction, "mask": mask}

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reconstruction of a batch from its visible voxels (no loss: the mask may hide nothing).

        Args:
            images: the input; hidden voxels are never read.
            mask: boolean block mask, True where hidden.

        Returns:
            The full-resolution reconstruction.

        Shape:
            images: (B, C, X, Y, Z); mask: (B, 1, X, Y, Z); output: (B, C, X, Y, Z).
        """
        active = ActiveMask.from_hidden(mask, self.block_size)
        features = sparse_encode(self.network.encoder, images, active)
        reconstruction = self.network.decoder(self.densify(features, active))
        if isinstance(reconstruction, (list, tuple)):
            # deep-supervision decoders return the full-resolution output first
            reconstruction = reconstruction[0]
        return reconstruction


class SparKReconstructor(SparKPretraining):
    """A trained SparK model as a plain network for inference: the hidden blocks are the all-zero ones.

    A scan masked as in :func:`shared.ssl.inspection.reconstruct_scans` (hidden blocks set to 0) goes in,
    the reconstruction comes out, so the sliding window and MONAI's ``verify_net_in_out`` can call it
    like any network. A block counts as hidden when every one of its voxels is exactly 0 in every channel
    (on z-scored scans only masked blocks and padding are); blocks are aligned to the input's origin,
    so a sliding window must start its patches at multiples of the block size. Its state dict is
    :class:`SparKPretraining`'s, so it loads the ``model.pt`` the SparK bundle writes.

    Args:
        network: as for :class:`SparKPretraining`.
        block_size: the mask block edge used in pre-training.

    Shape:
        (B, C, X, Y, Z) → (B, C, X, Y, Z), X, Y, Z multiples of the block size.
    """

    def __init__(self, network: nn.Module, *, block_size: int | Sequence[int] = 16):
        # a (never used) mask generator, so the state dict has the trained model's generator entry
        super().__init__(network, block_size=block_size, seed=0)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstructs a zero-masked batch (``mask``, True where hidden, overrides the zero blocks)."""
        if mask is None:
            mask = zero_blocks(images, self.block_size)
        return self.reconstruct(images, mask.to(device=images.device, dtype=torch.bool))


def zero_blocks(images: torch.Tensor, block_size: int | Sequence[int]) -> torch.Tensor:
    """True on every voxel of each block whose voxels are all exactly 0 in every channel.

    Shape:
        images: (B, C, X, Y, Z), X, Y, Z multiples of the block size; output: (B, 1, X, Y, Z) bool.
    """
    blocks = as_triple(block_size, "block_size")
    if images.ndim != 5 or any(size % block for size, block in zip(images.shape[2:], blocks)):
        raise ValueError(f"expected (B, C, X, Y, Z) in whole blocks of {blocks}, got shape {tuple(images.shape)}")
    nonzero = (images != 0).any(dim=1, keepdim=True).to(images.dtype)
    visible = nn.functional.max_pool3d(nonzero, blocks, blocks) > 0
    for axis, block in enumerate(blocks):
        visible = visible.repeat_interleave(block, dim=axis + 2)
    return ~visible
