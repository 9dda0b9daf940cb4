import numpy as np
import pytest

from shared.boxes.convention import boxes_from_instance_mask, boxes_voxel_to_world, boxes_world_to_voxel
from shared.data.resample import (boxes_after_resampling, resample_image, resample_instance_map, resampled_affine,
                                  resampled_shape, scale_boxes, spacing_of, zoom_factors, boxes_to_original_grid)


def _affine(spacing=(0.7, 0.8, 1.25), flip=False):
    affine = np.diag([*spacing, 1.0])
    if flip:
        affine[0, 0] *= -1
    affine[:3, 3] = [-20.0, 10.0, 5.0]
    return affine


def test_shape_affine_and_spacing():
    factors = zoom_factors([0.7, 0.8, 1.25], [1.0, 1.0, 1.0])
    assert resampled_shape((100, 50, 40), factors) == (70, 40, 50)
    affine = resampled_affine(_affine(flip=True), factors)
    np.testing.assert_allclose(spacing_of(affine), [1, 1, 1])
    assert affine[0, 0] == pytest.approx(-1.0)  # direction kept
    # the outer corner (index-space edge 0, i.e. centre coordinate -0.5) stays where it was
    corner = np.array([-0.5, -0.5, -0.5, 1.0])
    np.testing.assert_allclose(affine @ corner, _affine(flip=True) @ corner)


def test_resampled_shape_refuses_empty_and_huge_grids():
    # a header spacing of 0.001 mm empties an axis; one of 1,000 mm asks for terabytes
    with pytest.raises(ValueError, match="empty axis"):
        resampled_shape((512, 512, 200), zoom_factors([0.001] * 3, [1.0] * 3))
    with pytest.raises(ValueError, match="more than 4294967296 voxels"):
        resampled_shape((512, 512, 200), zoom_factors([1000.0] * 3, [1.0] * 3))
    assert resampled_shape((512, 512, 1000), zoom_factors([0.7, 0.7, 0.5], [0.5] * 3)) == (716, 716, 1000)


def test_image_linear_ramp_is_exact_under_trilinear():
    # a ramp along x sampled at voxel centres: trilinear interpolation reproduces it exactly inside
    x = np.arange(20, dtype=np.float32)
    array = np.broadcast_to(x[:, None, None], (20, 4, 4))[None].copy()
    factors = np.array([1.6, 1.0, 1.0])
    out = resample_image(array, factors)
    assert out.shape == (1, 32, 4, 4) and out.flags.c_contiguous
    centres = (np.arange(32) + 0.5) / 1.6 - 0.5
    inside = (centres >= 0) & (centres <= 19)
    np.testing.assert_allclose(out[0, inside, 0, 0], centres[inside], atol=1e-5)


@pytest.mark.parametrize("spacing, target", [((0.7, 0.8, 1.25), (1.0, 1.0, 1.0)), ((2.0, 1.5, 3.0), (1.0, 1.0, 1.0)),
                                             ((1.0, 1.0, 1.0), (0.6, 1.3, 0.9))])
def test_boxes_stay_on_objects_and_world_boxes_survive(rng, spacing, target):
    """Box of the resampled mask vs scaled box: within one new voxel; and the world boxes agree."""
    affine = _affine(spacing)
    mask = np.zeros((40, 36, 30), dtype=np.int16)
    for instance in range(1, 5):
        size = rng.integers(3, 9, size=3)
        start = [int(rng.integers(0, s - z)) for s, z in zip(mask.shape, size)]
        mask[tuple(slice(a, a + z) for a, z in zip(start, size))] = instance
    boxes, ids = boxes_from_instance_mask(mask)
    factors = zoom_factors(spacing_of(affine), target)
    new_mask = resample_instance_map(mask, factors)
    assert new_mask.shape == resampled_shape(mask.shape, factors) and new_mask.dtype == np.int16
    new_boxes = boxes_after_resampling(boxes, factors, mask=new_mask, instances=ids)
    np.testing.assert_allclose(new_boxes, scale_boxes(boxes, factors), atol=1.0)
    new_affine = resampled_affine(affine, factors)
    world_old = boxes_voxel_to_world(boxes, affine)
    np.testing.assert_allclose(boxes_voxel_to_world(scale_boxes(boxes, factors), new_affine), world_old, atol=1e-4)
    # mask → box → world → voxel on the new grid: the scaled box, exactly
    np.testing.assert_allclose(boxes_world_to_voxel(world_old, new_affine), scale_boxes(boxes, factors), atol=1e-4)
    # and back: the inverse mapping lands on the original boxes, as the two affines say
    np.testing.assert_allclose(boxes_to_original_grid(new_boxes, factors),
                               boxes_world_to_voxel(boxes_voxel_to_world(new_boxes, new_affine), affine), atol=1e-4)
    np.testing.assert_allclose(boxes_to_original_grid(scale_boxes(boxes, factors), factors), boxes, atol=1e-5)


def test_vanished_instance_falls_back_to_scaled_box():
    mask = np.zeros((10, 10, 10), dtype=np.int16)
    mask[4, 4, 4] = 1  # one voxel; shrinking by 4 drops it
    boxes, ids = boxes_from_instance_mask(mask)
    factors = np.array([0.25, 0.25, 0.25])
    new_mask = resample_instance_map(mask, factors)
    assert not (new_mask == 1).any()
    np.testing.assert_allclose(boxes_after_resampling(boxes, factors, mask=new_mask, instances=ids),
                               scale_boxes(boxes, factors))
