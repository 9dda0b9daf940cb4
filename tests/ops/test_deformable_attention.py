import pytest
import torch

from shared.ops.deformable_attention import multi_scale_deformable_attention

IMPLEMENTATIONS = ("reference", "fast")


def level_layout(shapes: list[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index, int(sizes.sum())


def random_inputs(shapes, batch=2, queries=5, heads=3, channels=4, points=2, seed=0, spread=0.3):
    """float64 inputs; locations reach ``spread`` beyond [0, 1] so that zero padding is exercised."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index, num_values = level_layout(shapes)
    levels = len(shapes)
    value = torch.randn(batch, num_values, heads, channels, generator=generator, dtype=torch.float64)
    locations = torch.rand(batch, queries, heads, levels, points, 3, generator=generator, dtype=torch.float64)
    locations = locations * (1 + 2 * spread) - spread
    weights = torch.randn(batch, queries, heads, levels * points, generator=generator, dtype=torch.float64)
    weights = weights.softmax(-1).view(batch, queries, heads, levels, points)
    return value, spatial_shapes, level_start_index, locations, weights


SHAPES = [
    [(5, 4, 3), (3, 2, 4), (1, 2, 2)],  # non-cubic, one axis of size 1
    [(6, 6, 6), (3, 3, 3), (2, 2, 2), (1, 1, 1)],  # the realistic pyramid, tiny
    [(2, 7, 3)],  # one level
]


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("chunk_elements", [50, 2**24])  # many chunks (a few queries each) and one
def test_fast_equals_reference_values_and_gradients(shapes, chunk_elements):
    inputs = random_inputs(shapes, seed=len(shapes))
    value, spatial_shapes, level_start_index, locations, weights = inputs
    grad_output = torch.randn(value.shape[0], locations.shape[1], value.shape[2] * value.shape[3],
                              dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    results = {}
    for implementation in IMPLEMENTATIONS:
        leaves = [tensor.clone().requires_grad_() for tensor in (value, locations, weights)]
        output = multi_scale_deformable_attention(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2],
                                                  implementation=implementation, chunk_elements=chunk_elements)
        results[implementation] = (output, *torch.autograd.grad(output, leaves, grad_output))
    for name, reference, fast in zip(("output", "value", "locations", "weights"), results["reference"],
                                     results["fast"]):
        assert reference.abs().max() > 0, name
        torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_gradcheck(implementation):
    value, spatial_shapes, level_start_index, locations, weights = random_inputs(
        [(3, 2, 4), (2, 1, 2)], batch=1, queries=2, heads=2, channels=2, points=2, seed=3
    )

    def attend(value, locations, weights):
        return multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights,
                                                implementation=implementation, chunk_elements=16)

    inputs = tuple(tensor.requires_grad_() for tensor in (value, locations, weights))
    assert torch.autograd.gradcheck(attend, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_sampling_at_voxel_centres_equals_indexing(implementation):
    # Non-cubic levels: a swapped axis order would read other voxels (or outside the volume).
    shapes = [(4, 3, 2), (2, 5, 1)]
    value, spatial_shapes, level_start_index, _, _ = random_inputs(shapes, batch=2, heads=2, channels=3)
    level, (x, y, z) = 0, (3, 1, 0)
    voxel_index = int(level_start_index[level]) + (x * 3 + y) * 2 + z
    other_index = int(level_start_index[1]) + (1 * 5 + 4) * 1 + 0  # voxel (1, 4, 0) of level 1
    locations = torch.zeros(2, 1, 2, 2, 1, 3, dtype=torch.float64)
    locations[:, :, :, 0, 0] = torch.tensor([(x + 0.5) / 4, (y + 0.5) / 3, (z + 0.5) / 2], dtype=torch.float64)
    locations[:, :, :, 1, 0] = torch.tensor([1.5 / 2, 4.5 / 5, 0.5 / 1], dtype=torch.float64)
    weights = torch.tensor([0.25, 0.75], dtype=torch.float64).view(1, 1, 1, 2, 1).expand(2, 1, 2, 2, 1)
    output = multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights,
                                              implementation=implementation)
    expected = 0.25 * value[:, voxel_index] + 0.75 * value[:, other_index]  # (B, M, C/M)
    torch.testing.assert_close(output, expected.reshape(2, 1, 6))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_halfway_between_two_voxels_averages_them_along_that_axis(implementation, axis):
    shapes = [(4, 3, 5)]
    value, spatial_shapes, level_start_index, _, _ = random_inputs(shapes, batch=1, heads=1, channels=2)
    volume = value[0, :, 0].view(4, 3, 5, 2)
    centre = torch.tensor([1.5 / 4, 1.5 / 3, 2.5 / 5], dtype=torch.float64)
    centre[axis] += 0.5 / shapes[0][axis]  # halfway between voxel 1 and 2 (2 and 3 along z) of that axis
    output = multi_scale_deformable_attention(
        value, spatial_shapes, level_start_index, centre.view(1, 1, 1, 1, 1, 3),
        torch.ones(1, 1, 1, 1, 1, dtype=torch.float64), implementation=implementation,
    )
    low, high = [1, 1, 2], [1, 1, 2]
    high[axis] += 1
    torch.testing.assert_close(output.view(2), (volume[tuple(low)] + volume[tuple(high)]) / 2)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_zero_padding_outside_the_volume(implementation):
    value, spatial_shapes, level_start_index, _, _ = random_inputs([(3, 3, 3)], batch=1, heads=1, channels=2)
    volume = value[0, :, 0].view(3, 3, 3, 2)
    # A voxel or more beyond a face reads nothing, also along z in a middle row (where a layout with the
    # rows side by side would read the next row); on the face itself (location 0) half of the first voxel.
    locations = torch.tensor([[-0.5 / 3, 0.5, 0.5], [0.5, 0.5, -1.2 / 3], [0.5, 0.5, 1 + 1.2 / 3],
                              [0.0, 1.5 / 3, 1.5 / 3]], dtype=torch.float64)
    output = multi_scale_deformable_attention(
        value, spatial_shapes, level_start_index, locations.view(1, 4, 1, 1, 1, 3),
        torch.ones(1, 4, 1, 1, 1, dtype=torch.float64), implementation=implementation,
    )
    torch.testing.assert_close(output[0, :3], torch.zeros(3, 2, dtype=torch.float64))
    torch.testing.assert_close(output[0, 3], volume[0, 1, 1] / 2)


def test_inconsistent_inputs_are_refused():
    value, spatial_shapes, level_start_index, locations, weights = random_inputs(SHAPES[0])
    with pytest.raises(ValueError, match="level_start_index"):
        multi_scale_deformable_attention(value, spatial_shapes, level_start_index.flip(0), locations, weights)
    with pytest.raises(ValueError, match="S="):
        multi_scale_deformable_attention(value[:, 1:], spatial_shapes, level_start_index, locations, weights)
    with pytest.raises(ValueError, match="attention_weights"):
        multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights[..., :1])
    with pytest.raises(ValueError, match="implementation"):
        multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights,
                                         implementation="cuda")


def test_half_precision_samples_where_float32_does():
    # At a 32-voxel level a bfloat16 image column would be a voxel off; the fast path computes in float32.
    spatial_shapes, level_start_index, num_values = level_layout([(4, 32, 32)])
    generator = torch.Generator().manual_seed(0)
    value = torch.randn(1, num_values, 1, 2, generator=generator)
    locations = torch.rand(1, 6, 1, 1, 1, 3, generator=generator, dtype=torch.float64)
    weights = torch.ones(1, 6, 1, 1, 1)
    output = multi_scale_deformable_attention(value.bfloat16(), spatial_shapes, level_start_index,
                                              locations.bfloat16(), weights.bfloat16(), implementation="fast")
    assert output.dtype == torch.bfloat16
    rounded = multi_scale_deformable_attention(value.bfloat16().double(), spatial_shapes, level_start_index,
                                               locations.bfloat16().double(), weights.double(),
                                               implementation="reference")
    torch.testing.assert_close(output.double(), rounded, rtol=2e-2, atol=2e-2)


def test_auto_takes_the_fast_path_from_half_a_million_points():
    spatial_shapes, level_start_index, num_values = level_layout([(2, 2, 2)])
    value = torch.randn(1, num_values, 8, 1, requires_grad=True)
    for queries, fast in ((4096, True), (4095, False)):  # 4096 · 8 heads · 16 points = 2**19
        locations = torch.rand(1, queries, 8, 1, 16, 3)
        weights = torch.full((1, queries, 8, 1, 16), 1 / 16)
        output = multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights)
        assert type(output.grad_fn).__name__.startswith("ChunkedDeformableAttention") == fast


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True),
                                   (False, True, True)])
def test_fast_gradients_when_only_some_inputs_need_them(needs):
    value, spatial_shapes, level_start_index, locations, weights = random_inputs(SHAPES[0])
    gradients = {}
    for implementation in IMPLEMENTATIONS:
        inputs = [tensor.clone().requires_grad_(need) for tensor, need in zip((value, locations, weights), needs)]
        output = multi_scale_deformable_attention(inputs[0], spatial_shapes, level_start_index, inputs[1], inputs[2],
                                                  implementation=implementation)
        gradients[implementation] = torch.autograd.grad(output.sum(), [t for t in inputs if t.requires_grad])
    for reference, fast in zip(gradients["reference"], gradients["fast"]):
        torch.testing.assert_close(fast, reference)
