import pytest
import torch

from shared.ssl.masking import block_grid_mask, block_grid_shape, block_mask, expand_block_mask, masked_block_count


def test_exact_count_per_sample_and_ratio():
    mask = block_mask(5, (32, 16, 48), block_size=8, mask_ratio=0.75, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (5, 1, 32, 16, 48) and mask.dtype == torch.bool
    num_blocks = 4 * 2 * 6
    expected_blocks = round(0.75 * num_blocks)
    per_sample = mask.flatten(1).sum(1)
    assert per_sample.tolist() == [expected_blocks * 8**3] * 5
    assert per_sample[0].item() / mask[0].numel() == pytest.approx(0.75)
    # samples are drawn independently
    assert not torch.equal(mask[0], mask[1])


def test_blocks_are_aligned_and_uniform():
    mask = block_mask(3, (16, 24, 8), block_size=(4, 8, 2), mask_ratio=0.5, generator=torch.Generator().manual_seed(1))
    blocks = mask.view(3, 1, 4, 4, 3, 8, 4, 2)
    # inside each block all voxels agree: the block minimum equals the block maximum
    assert torch.equal(blocks.amin(dim=(3, 5, 7)), blocks.amax(dim=(3, 5, 7)))
    assert blocks.amax(dim=(3, 5, 7)).flatten(1).sum(1).tolist() == [24] * 3


def test_generator_makes_masks_reproducible():
    first = block_mask(2, (16, 16, 16), block_size=4, generator=torch.Generator().manual_seed(7))
    second = block_mask(2, (16, 16, 16), block_size=4, generator=torch.Generator().manual_seed(7))
    third = block_mask(2, (16, 16, 16), block_size=4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_every_block_is_chosen_sometimes():
    # the choice is uniform: no block position is systematically skipped
    masks = block_mask(200, (8, 8, 8), block_size=4, mask_ratio=0.25, generator=torch.Generator().manual_seed(0))
    frequency = masks.view(200, 2, 4, 2, 4, 2, 4)[:, :, 0, :, 0, :, 0].float().mean(0)
    assert frequency.min() > 0.1 and frequency.max() < 0.4


def test_patch_not_divisible_by_block_raises():
    with pytest.raises(ValueError, match="not divisible"):
        block_mask(1, (32, 32, 20), block_size=16)
    with pytest.raises(ValueError, match="block_size"):
        block_grid_shape((16, 16, 16), (4, 4))


def test_ratio_checks():
    with pytest.raises(ValueError, match="mask_ratio"):
        masked_block_count(8, 0.0)
    with pytest.raises(ValueError, match="masks no block"):
        masked_block_count(8, 0.01)
    assert masked_block_count(64, 0.75) == 48


def test_block_mask_is_the_expanded_grid_mask():
    grid = block_grid_mask(3, (2, 3, 1), mask_ratio=0.5, generator=torch.Generator().manual_seed(4))
    assert grid.shape == (3, 1, 2, 3, 1) and grid.flatten(1).sum(1).tolist() == [3, 3, 3]
    voxels = expand_block_mask(grid, (4, 2, 8))
    assert torch.equal(voxels[:, :, ::4, ::2, ::8], grid) and voxels.shape == (3, 1, 8, 6, 8)
    same = block_mask(3, (8, 6, 8), block_size=(4, 2, 8), mask_ratio=0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(same, voxels)
