"""The sparse encoder forward: masked voxels never matter, the norm sees active voxels only, all-ones is dense."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shared.encoders import build_encoder
from shared.ssl.masking import block_mask
from shared.ssl.sparse import ActiveMask, sparse_encode, sparse_forward, sparse_instance_norm

# zero_init_residual off: with zero-initialised last norms, the second convs would get no gradient.
TINY = {"name": "resenc", "preset": "tiny", "zero_init_residual": False}


def _encoder(**overrides) -> nn.Module:
    torch.manual_seed(0)
    encoder = build_encoder({**TINY, **overrides}, 2).double()
    with torch.no_grad():  # affine norms away from (1, 0), so they are exercised
        for module in encoder.modules():
            if isinstance(module, nn.InstanceNorm3d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return encoder


def _hidden(seed: int = 0, shape=(16, 16, 32), block_size=4, batch=2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return block_mask(batch, shape, block_size=block_size, mask_ratio=0.5, generator=generator)


def test_perturbing_hidden_voxels_changes_no_output():
    encoder = _encoder()
    hidden = _hidden()
    mask = ActiveMask.from_hidden(hidden, 4)
    images = torch.randn(2, 2, 16, 16, 32, dtype=torch.float64)
    reference = sparse_encode(encoder, images, mask)
    perturbed = images + 100.0 * torch.randn_like(images) * hidden
    outputs = sparse_encode(encoder, perturbed, mask)
    for level, (expected, output) in enumerate(zip(reference, outputs)):
        assert torch.equal(expected, output), level
        # hidden positions stay exactly zero at the levels that resolve the blocks (strides 1, 2, 4)
        if level < 3:
            assert torch.all(output * ~mask.at(output.shape[2:]) == 0)
    # the levels really depend on the visible voxels
    changed = sparse_encode(encoder, images + 1.0 * ~hidden, mask)
    assert not torch.allclose(changed[-1], reference[-1])


def test_sparse_norm_equals_instance_norm_on_the_active_voxels_alone():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 6, 8, 5, generator=generator, dtype=torch.float64) * 3 + 1
    active = torch.rand(3, 1, 6, 8, 5, generator=generator) < 0.4
    weight = torch.rand(4, generator=generator, dtype=torch.float64) + 0.5
    bias = torch.randn(4, generator=generator, dtype=torch.float64)
    output = sparse_instance_norm(x, active, weight=weight, bias=bias, eps=1e-5)
    for sample in range(3):
        voxels = x[sample][:, active[sample, 0]]  # (C, N) active voxels only
        expected = nn.functional.instance_norm(voxels[None], weight=weight, bias=bias, eps=1e-5)[0]
        assert torch.allclose(output[sample][:, active[sample, 0]], expected, atol=1e-12)
        assert torch.all(output[sample][:, ~active[sample, 0]] == 0)


def test_all_ones_mask_equals_the_dense_encoder():
    encoder = _encoder()
    images = torch.randn(2, 2, 16, 16, 32, dtype=torch.float64)
    mask = ActiveMask(torch.ones(2, 1, 16, 16, 32, dtype=torch.bool), 4)
    for sparse, dense in zip(sparse_encode(encoder, images, mask), encoder(images)):
        assert sparse.shape == dense.shape
        assert torch.allclose(sparse, dense, atol=1e-10)


def test_plain_encoder_runs_sparsely_too():
    encoder = build_encoder({"name": "plain", "preset": "tiny"}, 1).double()
    images = torch.randn(1, 1, 16, 16, 16, dtype=torch.float64)
    ones = ActiveMask(torch.ones(1, 1, 16, 16, 16, dtype=torch.bool), 8)
    for sparse, dense in zip(sparse_encode(encoder, images, ones), encoder(images)):
        assert torch.allclose(sparse, dense, atol=1e-10)


def test_gradients_reach_every_encoder_parameter():
    encoder = _encoder()
    mask = ActiveMask.from_hidden(_hidden(seed=2), 4)
    features = sparse_encode(encoder, torch.randn(2, 2, 16, 16, 32, dtype=torch.float64), mask)
    sum(feature.square().mean() for feature in features).backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_mask_at_each_grid():
    hidden = _hidden(shape=(16, 16, 16), block_size=4, batch=1)
    mask = ActiveMask.from_hidden(hidden, 4)
    assert torch.equal(mask.at((16, 16, 16)), ~hidden)
    assert torch.equal(mask.at((4, 4, 4)), ~hidden[:, :, ::4, ::4, ::4])  # the block grid
    assert torch.equal(mask.at((8, 8, 8)).repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4),
                       ~hidden)
    assert bool(mask.at((2, 2, 2)).all())  # coarser than the blocks: all active
    with pytest.raises(ValueError, match="does not divide"):
        mask.at((5, 16, 16))
    with pytest.raises(ValueError, match="multiple of the encoder's strides"):
        ActiveMask.from_hidden(torch.zeros(1, 1, 12, 12, 12, dtype=torch.bool), 4).at((4, 4, 4))


def test_unknown_layers_are_refused():
    mask = ActiveMask(torch.ones(1, 1, 4, 4, 4, dtype=torch.bool), 2)
    with pytest.raises(TypeError, match="BatchNorm3d"):
        sparse_forward(nn.BatchNorm3d(2), torch.zeros(1, 2, 4, 4, 4), mask)
    with pytest.raises(TypeError, match="instance norm"):
        sparse_forward(nn.Sequential(nn.Conv3d(1, 2, 1), nn.InstanceNorm3d(2, track_running_stats=True)),
                       torch.zeros(1, 1, 4, 4, 4), mask)
