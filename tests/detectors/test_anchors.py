from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.detectors.anchors import AnchorGenerator, anchor_shapes, flatten_head_outputs

SIZES = [[2.0, 3.0, 5.0], [4.0, 6.0, 7.0], [1.0, 8.0, 9.0]]


def test_anchor_shapes_order_is_width_major_then_height_then_depth():
    shapes = anchor_shapes(SIZES)
    assert shapes.shape == (27, 3)
    for i_w, i_h, i_d in [(0, 0, 0), (1, 2, 0), (2, 1, 2), (0, 2, 1)]:
        a = (i_w * 3 + i_h) * 3 + i_d
        np.testing.assert_array_equal(shapes[a], [SIZES[0][i_w], SIZES[1][i_h], SIZES[2][i_d]])


def test_anchor_shapes_needs_three_axes():
    with pytest.raises(ValueError, match="one list per spatial axis"):
        anchor_shapes([[1, 2, 3], [1, 2, 3]])


@pytest.mark.parametrize("strides", [
    [4, 8],
    [(2, 2, 1), [4, 4, 2]],  # 0.8 × 0.8 × 2.5 mm: in-plane strides twice the through-plane ones
], ids=["isotropic", "anisotropic"])
def test_anchors_per_level_count_centres_and_scaling(strides):
    generator = AnchorGenerator(SIZES, strides)
    stride0, stride1 = (torch.tensor(stride, dtype=torch.float32).expand(3) for stride in generator.strides)
    level0, level1 = generator.anchors_per_level([(2, 3, 4), (1, 2, 2)])
    assert level0.shape == (2 * 3 * 4 * 27, 6) and level1.shape == (1 * 2 * 2 * 27, 6)
    # row = position · A + a with position = (x · Y + y) · Z + z; centres per axis at (index + ½) · stride
    x, y, z, a = 1, 2, 3, 5
    row = ((x * 3 + y) * 4 + z) * 27 + a
    centre = (torch.tensor([x, y, z]) + 0.5) * stride0
    size = torch.tensor(anchor_shapes(SIZES)[a], dtype=torch.float32)
    torch.testing.assert_close(level0[row], torch.cat([centre - size / 2, centre + size / 2]))
    # the next level scales sizes by its stride over the first's (2 on every axis here)
    row1 = ((0 * 2 + 1) * 2 + 1) * 27 + a
    centre1 = (torch.tensor([0, 1, 1]) + 0.5) * stride1
    torch.testing.assert_close(level1[row1], torch.cat([centre1 - size, centre1 + size]))


def test_anchors_are_cached_and_checked():
    generator = AnchorGenerator(SIZES, [4, 8])
    first = generator.anchors_per_level([(2, 2, 2), (1, 1, 1)])
    assert generator.anchors_per_level([(2, 2, 2), (1, 1, 1)]) is first
    assert list(generator.state_dict()) == []
    with pytest.raises(ValueError, match="2 detection strides"):
        generator.anchors_per_level([(2, 2, 2)])


def test_flatten_head_outputs_follows_the_channel_layout_a_times_k_plus_k():
    num_anchors, num_classes, grid = 27, 2, (2, 3, 2)
    a_idx = torch.arange(num_anchors).reshape(-1, 1, 1, 1, 1)
    k_idx = torch.arange(num_classes).reshape(1, -1, 1, 1, 1)
    pos = torch.arange(int(np.prod(grid))).reshape(1, 1, *grid)
    # value encodes (position, anchor, class); channel = a · K + k
    values = (pos * 1000 + a_idx * 10 + k_idx).float().reshape(1, num_anchors * num_classes, *grid)
    flat = flatten_head_outputs([values, values[..., :1, :1, :1]], num_classes)
    assert flat.shape == (1, 12 * 27 + 27, num_classes)
    for p, a, k in [(0, 0, 1), (5, 13, 0), (11, 26, 1)]:
        assert flat[0, p * num_anchors + a, k] == p * 1000 + a * 10 + k
    assert flat[0, 12 * 27 + 4, 1] == 41  # second level starts after all first-level anchors


def test_anisotropic_levels_scale_anchors_per_axis():
    generator = AnchorGenerator(SIZES, [(2, 2, 1), [4, 4, 2]])
    assert generator.strides == [(2, 2, 1), (4, 4, 2)]
    np.testing.assert_array_equal(generator.level_shapes(1), anchor_shapes(SIZES) * [2.0, 2.0, 2.0])
    # a level pooled in-plane only doubles its anchors in-plane only
    in_plane = AnchorGenerator(SIZES, [(1, 1, 1), (2, 2, 1)])
    np.testing.assert_array_equal(in_plane.level_shapes(1), anchor_shapes(SIZES) * [2.0, 2.0, 1.0])


def test_box_coder_round_trip_on_an_anisotropic_level():
    from shared.detectors.box_coder import BoxCoder

    anchors = AnchorGenerator(SIZES, [(2, 2, 1), (4, 4, 2)]).anchors_per_level(
        [(4, 4, 8), (2, 2, 4)], dtype=torch.float64)[1]
    generator = torch.Generator().manual_seed(0)
    low = torch.rand(len(anchors), 3, generator=generator, dtype=torch.float64) * 8
    boxes = torch.cat([low, low + 1 + torch.rand(len(anchors), 3, generator=generator, dtype=torch.float64) * 6], 1)
    coder = BoxCoder()
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes)


def test_gather_head_outputs_reads_the_rows_of_the_flattened_outputs_with_their_gradients():
    from shared.detectors.anchors import flatten_head_outputs, gather_head_outputs

    generator = torch.Generator().manual_seed(0)
    grids, num_anchors, channels = [(4, 3, 2), (2, 2, 1)], 5, 6
    outputs = [torch.randn(2, num_anchors * channels, *g, generator=generator, requires_grad=True) for g in grids]
    total = sum(g[0] * g[1] * g[2] for g in grids) * num_anchors
    for rows in (torch.tensor([0, 7, 119, 120, 139]), torch.tensor([135, 3, 121, 60]), torch.zeros(0, dtype=torch.long)):
        assert rows.numel() == 0 or rows.max() < total
        expected = flatten_head_outputs(outputs, channels)[1, rows]
        gathered = gather_head_outputs(outputs, channels, 1, rows)
        assert torch.equal(gathered, expected)
        weights = torch.randn(expected.shape, generator=generator)
        expected_grads = torch.autograd.grad((expected * weights).sum(), outputs, allow_unused=True)
        grads = torch.autograd.grad((gathered * weights).sum(), outputs, allow_unused=True)
        for ours, reference in zip(grads, expected_grads):
            assert (ours is None and reference is None) or torch.equal(ours, reference)


def test_all_anchors_is_the_concatenation_and_is_cached():
    generator = AnchorGenerator([[4.0, 6.0, 8.0]] * 3, [4, 8])
    grids = [(4, 4, 4), (2, 2, 2)]
    joined = generator.all_anchors(grids)
    assert torch.equal(joined, torch.cat(generator.anchors_per_level(grids)))
    assert generator.all_anchors(grids) is joined
