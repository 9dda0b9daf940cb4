import numpy as np

from shared.boxes.convention import boxes_voxel_to_world, boxes_world_to_voxel
from shared.data.resample import resampled_shape, spacing_of, zoom_factors
from shared.data.transforms_geometry import BoxesVoxelToWorldd, BoxesWorldToVoxeld, ResampleToSpacingd
from tests._cases import spaced_affine

WORLD = np.array([[1.0, 12.0, 9.0, 3.0, 4.0, 5.0], [-4.0, 9.0, 6.0, 2.0, 2.0, 2.5]])


def test_world_boxes_go_to_voxels_and_back_through_the_convention():
    affine = spaced_affine(flip_x=True)
    voxel = BoxesWorldToVoxeld("boxes")({"boxes": WORLD, "affine": affine})["boxes"]
    np.testing.assert_array_equal(voxel, boxes_world_to_voxel(WORLD, affine))
    back = BoxesVoxelToWorldd("boxes")({"boxes": voxel, "affine": affine})["boxes"]
    np.testing.assert_allclose(back, WORLD, atol=1e-5)
    assert "boxes" not in BoxesWorldToVoxeld("boxes")({"affine": affine})  # a scan without annotations


def test_resampling_reaches_the_spacing_and_scales_boxes_by_the_zoom_factor():
    affine = spaced_affine(spacing=(0.7, 0.8, 1.25))
    image = np.random.default_rng(0).normal(size=(1, 20, 18, 12)).astype(np.float32)
    boxes = np.array([[2.0, 3.0, 1.0, 6.0, 9.0, 4.0]], dtype=np.float32)
    out = ResampleToSpacingd([1.0, 1.0, 1.0])({"image": image, "affine": affine, "boxes": boxes, "mask": None})
    factors = zoom_factors(spacing_of(affine), [1.0, 1.0, 1.0])
    assert out["image"].shape[1:] == resampled_shape(image.shape[1:], factors)
    np.testing.assert_allclose(spacing_of(out["affine"]), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(out["boxes"], boxes * np.tile(factors, 2), rtol=1e-6)
    # the world boxes stay where they were
    np.testing.assert_allclose(boxes_voxel_to_world(out["boxes"], out["affine"]), boxes_voxel_to_world(boxes, affine),
                               atol=1e-4)


def test_a_scan_at_the_target_spacing_keeps_its_voxels_and_takes_its_boxes_from_the_mask():
    image = np.zeros((1, 8, 8, 8), np.float32)
    mask = np.zeros((8, 8, 8), np.int16)
    mask[2:4, 3:6, 1:2] = 5
    data = {"image": image, "affine": np.eye(4), "mask": mask, "boxes": np.array([[0.0, 0, 0, 8, 8, 8]]),
            "instances": [5]}
    out = ResampleToSpacingd([1.0, 1.0, 1.0])(data)
    assert out["image"] is image
    np.testing.assert_array_equal(out["boxes"], [[2, 3, 1, 4, 6, 2]])
