import pytest
import torch

from shared.ops.deformable_attention_layer import MultiScaleDeformableAttention3D, sphere_directions
from tests.ops.test_deformable_attention import level_layout

SHAPES = [(6, 5, 4), (3, 3, 2), (2, 1, 1)]


def layer_inputs(batch=2, queries=7, embed_dim=16, box=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index, num_values = level_layout(SHAPES)
    query = torch.randn(batch, queries, embed_dim, generator=generator)
    reference = torch.rand(batch, queries, len(SHAPES), 6 if box else 3, generator=generator)
    if box:
        reference[..., 3:] *= 0.5
    value_input = torch.randn(batch, num_values, embed_dim, generator=generator)
    return query, reference, value_input, spatial_shapes, level_start_index


@pytest.mark.parametrize("box", [False, True])
def test_output_shape_and_every_parameter_gets_a_gradient(box):
    torch.manual_seed(0)
    layer = MultiScaleDeformableAttention3D(16, num_heads=4, num_levels=3, num_points=2)
    query, reference, value_input, spatial_shapes, level_start_index = layer_inputs(box=box)
    output = layer(query, reference, value_input, spatial_shapes, level_start_index)
    assert output.shape == (2, 7, 16)
    output.pow(2).sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_fast_and_reference_layers_agree():
    torch.manual_seed(0)
    fast = MultiScaleDeformableAttention3D(16, 4, 3, 2, implementation="fast").double()
    reference = MultiScaleDeformableAttention3D(16, 4, 3, 2, implementation="reference").double()
    reference.load_state_dict(fast.state_dict())
    inputs = [tensor.double() if tensor.is_floating_point() else tensor for tensor in layer_inputs()]
    torch.testing.assert_close(fast(*inputs), reference(*inputs))


def test_offsets_start_in_distinct_directions_spanning_3d():
    layer = MultiScaleDeformableAttention3D(32, num_heads=8, num_levels=3, num_points=4)
    assert torch.count_nonzero(layer.sampling_offsets.weight) == 0
    bias = layer.sampling_offsets.bias.detach().view(8, 3, 4, 3).double()
    first = bias[:, 0, 0]
    directions = first / first.norm(dim=-1, keepdim=True)
    cosines = directions @ directions.T - torch.eye(8, dtype=torch.float64)
    assert cosines.max() < 0.9  # no two heads look the same way
    assert torch.linalg.matrix_rank(directions) == 3  # not in one plane as Deformable DETR's 2-D grid would be
    torch.testing.assert_close(first.abs().amax(-1), torch.ones(8, dtype=torch.float64))  # one voxel out
    for point in range(4):  # point k at k + 1 voxels, the same on every level
        torch.testing.assert_close(bias[:, :, point], (point + 1) * first[:, None].expand(8, 3, 3))
    torch.testing.assert_close(sphere_directions(8).norm(dim=-1), torch.ones(8, dtype=torch.float64))


def test_initial_sampling_locations_and_uniform_attention():
    layer = MultiScaleDeformableAttention3D(16, num_heads=4, num_levels=3, num_points=2)
    query, points, _, spatial_shapes, _ = layer_inputs()
    assert torch.count_nonzero(layer.attention_weights(query)) == 0  # softmax gives 1 / (L·K) everywhere
    first = layer.sampling_offsets.bias.detach().view(4, 3, 2, 3)[:, 0, 0]  # (M, 3) voxels
    locations = layer.sampling_locations(query, points, spatial_shapes)  # (B, Q, M, L, K, 3)
    voxel = spatial_shapes[1].float()
    torch.testing.assert_close(locations[:, :, :, 1, 1], points[:, :, None, 1] + 2 * first / voxel)
    # Around a box, the outermost point reaches the box face along each head's dominant axis.
    boxes = torch.cat([points, torch.full_like(points, 0.2)], -1)
    locations = layer.sampling_locations(query, boxes, spatial_shapes)
    torch.testing.assert_close(locations[:, :, :, 0, 1], points[:, :, None, 0] + first * 0.1)


def test_padding_mask_zeroes_the_masked_values():
    torch.manual_seed(0)
    layer = MultiScaleDeformableAttention3D(16, num_heads=4, num_levels=3, num_points=2)
    query, reference, value_input, spatial_shapes, level_start_index = layer_inputs()
    mask = torch.zeros(value_input.shape[:2], dtype=torch.bool)
    mask[:, ::2] = True
    changed = value_input.clone()
    changed[mask] = torch.randn(int(mask.sum()), 16)
    masked = layer(query, reference, value_input, spatial_shapes, level_start_index, mask)
    torch.testing.assert_close(layer(query, reference, changed, spatial_shapes, level_start_index, mask), masked)
    assert not torch.allclose(layer(query, reference, value_input, spatial_shapes, level_start_index), masked)
    everything = layer(query, reference, value_input, spatial_shapes, level_start_index, torch.ones_like(mask))
    torch.testing.assert_close(everything, layer.output_proj.bias.expand_as(everything))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleDeformableAttention3D(10, num_heads=4)
    layer = MultiScaleDeformableAttention3D(16, num_heads=4, num_levels=3, num_points=2)
    query, reference, value_input, spatial_shapes, level_start_index = layer_inputs()
    with pytest.raises(ValueError, match="reference_points"):
        layer(query, reference[..., :2], value_input, spatial_shapes, level_start_index)
