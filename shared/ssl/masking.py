"""Block masking for masked image modelling: the same number of masked blocks in every sample.

The volume is tiled by blocks of ``block_size`` voxels per axis; a fixed fraction of the blocks is
chosen without replacement, independently per sample (:func:`block_grid_mask`, one entry per block,
what SparK's sparse encoder works from), and the block mask is expanded to voxels
(:func:`expand_block_mask`; :func:`block_mask` does both, what MAE uses).
Keeping the count fixed (rather than masking each block with probability ``mask_ratio``) gives every
sample the same number of loss voxels, so a batch mean does not favour lightly masked samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def as_triple(value: int | Sequence[int], argument: str) -> tuple[int, int, int]:
    """Broadcasts a scalar to three axes, checking a sequence has exactly three positive entries.

    Args:
        value: an int or three ints.
        argument: the argument's name, for the error message.

    Returns:
        Three positive ints.
    """
    values = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != 3 or any(v < 1 for v in values):
        raise ValueError(f"{argument}: expected a positive int or three positive ints, got {value!r}")
    return values  # type: ignore[return-value]


def masked_block_count(num_blocks: int, mask_ratio: float) -> int:
    """Number of blocks masked per sample: ``round(mask_ratio * num_blocks)``, at least one.

    Args:
        num_blocks: blocks per sample.
        mask_ratio: fraction of blocks to mask, in (0, 1].

    Returns:
        The count, identical for every sample.
    """
    if not 0.0 < mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio: expected a fraction in (0, 1], got {mask_ratio}")
    count = int(round(mask_ratio * num_blocks))
    if count < 1:
        raise ValueError(
            f"mask_ratio={mask_ratio} masks no block out of {num_blocks}: use a larger patch, smaller "
            "blocks or a larger ratio (the loss is defined on masked voxels only)"
        )
    return count


def block_grid_shape(
    spatial_shape: Sequence[int], block_size: int | Sequence[int]
) -> tuple[int, int, int]:
    """Number of blocks along each axis; the patch must be an exact multiple of the block size.

    Args:
        spatial_shape: patch size (X, Y, Z) in voxels.
        block_size: block edge in voxels, one int or one per axis.

    Returns:
        Blocks per axis.
    """
    blocks = as_triple(block_size, "block_size")
    shape = tuple(int(s) for s in spatial_shape)
    if len(shape) != 3:
        raise ValueError(f"expected a 3-D spatial shape, got {tuple(spatial_shape)}")
    if any(s % b for s, b in zip(shape, blocks)):
        raise ValueError(
            f"patch size {shape} is not divisible by the mask block size {blocks}: choose a patch "
            "size that is a multiple of the block size on every axis"
        )
    return shape[0] // blocks[0], shape[1] // blocks[1], shape[2] // blocks[2]


def block_grid_mask(
    batch_size: int,
    grid_shape: Sequence[int],
    *,
    mask_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draws the block-level mask: the same number of masked blocks in every sample.

    Args:
        batch_size: number of samples B.
        grid_shape: blocks per axis (:func:`block_grid_shape`).
        mask_ratio: fraction of blocks masked.
        generator: CPU random generator, for reproducible masks.

    Returns:
        Boolean mask on the CPU, True where a block is masked (hidden from the network).

    Shape:
        output: (B, 1, GX, GY, GZ).
    """
    grid = tuple(int(g) for g in grid_shape)
    num_blocks = grid[0] * grid[1] * grid[2]
    count = masked_block_count(num_blocks, mask_ratio)
    flat = torch.zeros(batch_size, num_blocks, dtype=torch.bool)
    for sample in range(batch_size):
        chosen = torch.randperm(num_blocks, generator=generator)[:count]
        flat[sample, chosen] = True
    return flat.view(batch_size, 1, *grid)


def expand_block_mask(grid_mask: torch.Tensor, block_size: int | Sequence[int]) -> torch.Tensor:
    """Expands a block-level mask to voxels: every block becomes ``block_size`` voxels per axis.

    Args:
        grid_mask: one entry per block.
        block_size: block edge in voxels, one int or one per axis.

    Returns:
        The voxel-level mask, same dtype and device.

    Shape:
        grid_mask: (B, C, GX, GY, GZ); output: (B, C, GX * bx, GY * by, GZ * bz).
    """
    mask = grid_mask
    for axis, size in enumerate(as_triple(block_size, "block_size")):
        mask = mask.repeat_interleave(size, dim=axis + 2)
    return mask


def block_mask(
    batch_size: int,
    spatial_shape: Sequence[int],
    *,
    block_size: int | Sequence[int] = 16,
    mask_ratio: float = 0.75,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draws a voxel mask with exactly the same number of masked blocks in every sample.

    Args:
        batch_size: number of samples B.
        spatial_shape: patch size (X, Y, Z), a multiple of ``block_size`` on every axis.
        block_size: block edge in voxels (16 in the paper), one int or one per axis.
        mask_ratio: fraction of blocks masked (0.75 in the paper).
        generator: CPU random generator, for reproducible masks.
        device: where the returned mask lives.

    Returns:
        Boolean mask, True where a voxel is masked (hidden from the network).

    Shape:
        output: (B, 1, X, Y, Z).
    """
    grid = block_grid_shape(spatial_shape, block_size)
    mask = expand_block_mask(block_grid_mask(batch_size, grid, mask_ratio=mask_ratio, generator=generator), block_size)
    return mask.to(device) if device is not None else mask
