from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from shared.boxes.convention import boxes_from_instance_mask
from shared.data.augment import (
    AugmentationSettings,
    adjust_contrast,
    adjust_gamma,
    augment_intensity,
    draw_spatial_matrix,
    extract_patch,
    gaussian_blur,
    rotation_matrix,
    transform_boxes,
)
from shared.data.sampling import read_region

NOTHING = AugmentationSettings.from_spec({key: 0.0 for key in AugmentationSettings().to_spec() if key.endswith("probability")})


def _instances(rng, shape=(14, 12, 10)):
    instance_map = np.zeros(shape, dtype=np.int16)
    instance_map[2:5, 3:9, 1:4] = 1
    instance_map[8:13, 1:4, 5:9] = 2
    instance_map[9, 4, 6] = 2
    image = rng.normal(size=(2,) + shape).astype(np.float32)
    return image, instance_map


def test_settings_from_spec_defaults_overrides_and_round_trip():
    settings = AugmentationSettings.from_spec({"scaling_range": [0.8, 1.2], "rotation_degrees": 15})
    assert settings.scaling_range == (0.8, 1.2) and settings.rotation_degrees == (15.0, 15.0, 15.0)
    assert settings.gamma_probability == AugmentationSettings().gamma_probability
    assert AugmentationSettings.from_spec(settings.to_spec()) == settings
    assert AugmentationSettings.from_spec(None) == AugmentationSettings()
    with pytest.raises(ValueError, match="rotation_probabilty"):
        AugmentationSettings.from_spec({"rotation_probabilty": 0.1})
    with pytest.raises(ValueError, match="gamma_probability"):
        AugmentationSettings.from_spec({"gamma_probability": 1.5})
    with pytest.raises(ValueError, match="scaling_range"):
        AugmentationSettings.from_spec({"scaling_range": [1.4, 0.7]})


def test_rotation_matrix_is_a_proper_rotation(rng):
    matrix = rotation_matrix(rng.uniform(-1, 1, size=3))
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(matrix) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation_matrix([0, 0, np.pi / 2]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


def test_draw_spatial_matrix_respects_probabilities(rng):
    assert np.array_equal(draw_spatial_matrix(NOTHING, rng), np.eye(3))
    always = AugmentationSettings(rotation_probability=1.0, scaling_probability=0.0, mirror_probability=1.0)
    assert np.array_equal(draw_spatial_matrix(always, rng, allow_rotation=False), -np.eye(3))
    rotated = draw_spatial_matrix(always, rng)
    assert not np.allclose(rotated, np.diag(np.diag(rotated)))
    scaled = draw_spatial_matrix(AugmentationSettings(scaling_probability=1.0, mirror_probability=0.0,
                                                      rotation_probability=0.0), rng)
    assert 1 / 1.4 <= scaled[0, 0] <= 1 / 0.7 and np.allclose(scaled, scaled[0, 0] * np.eye(3))


def test_identity_is_an_exact_crop_and_mirroring_twice_is_identity(rng):
    image, instance_map = _instances(rng)
    origin, size = np.array([1, -2, 3]), (8, 8, 8)
    patch, map_patch = extract_patch(image, instance_map, origin, size)
    np.testing.assert_array_equal(patch.numpy(), read_region(image, origin, origin + size))
    np.testing.assert_array_equal(map_patch, read_region(instance_map, origin, origin + size))
    mirror = np.diag([-1.0, 1.0, -1.0])
    once, map_once = extract_patch(image, instance_map, origin, size, mirror)
    np.testing.assert_array_equal(once.numpy(), np.flip(patch.numpy(), axis=(1, 3)))
    twice, map_twice = extract_patch(once.numpy(), map_once, np.zeros(3, int), size, mirror)
    np.testing.assert_array_equal(twice.numpy(), patch.numpy())
    np.testing.assert_array_equal(map_twice, map_patch)


@pytest.mark.parametrize("signs", [(-1, 1, 1), (1, -1, 1), (1, 1, -1), (-1, -1, -1)])
def test_boxes_follow_mirroring_exactly(rng, signs):
    image, instance_map = _instances(rng)
    origin, size, mirror = np.array([0, 1, -1]), (14, 10, 12), np.diag(np.array(signs, float))
    boxes, _ = boxes_from_instance_mask(instance_map)
    _, map_patch = extract_patch(image, instance_map, origin, size, mirror)
    moved = transform_boxes(boxes, origin, size, mirror)
    np.testing.assert_array_equal(moved, boxes_from_instance_mask(map_patch)[0])
    np.testing.assert_array_equal(transform_boxes(moved, np.zeros(3), size, mirror), boxes - np.tile(origin, 2))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_quarter_turn_by_the_affine_path_matches_rot90(rng, axis):
    image, instance_map = _instances(rng, shape=(14, 14, 14))
    angles = np.zeros(3)
    angles[axis] = np.pi / 2
    matrix = rotation_matrix(angles)
    patch, map_patch = extract_patch(image, instance_map, np.zeros(3, int), (14, 14, 14), matrix)
    plane = tuple(a for a in range(3) if a != axis)
    np.testing.assert_array_equal(map_patch, np.rot90(instance_map, k=-1, axes=plane))
    np.testing.assert_allclose(patch.numpy(), np.rot90(image, k=-1, axes=tuple(a + 1 for a in plane)), atol=1e-5)
    boxes, _ = boxes_from_instance_mask(instance_map)
    np.testing.assert_allclose(transform_boxes(boxes, np.zeros(3), (14, 14, 14), matrix),
                               boxes_from_instance_mask(map_patch)[0], atol=1e-9)


def test_affine_path_is_exact_on_a_linear_image(rng):
    # Bilinear interpolation reproduces a linear function, so every interior voxel has a known value.
    shape, size, origin = (30, 28, 26), np.array([10, 9, 8]), np.array([9, 8, 7])
    slope = np.array([1.0, -2.0, 0.5])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    image = (grid @ slope)[None].astype(np.float32)
    matrix = rotation_matrix([0.3, -0.2, 0.4]) / 1.3 @ np.diag([-1.0, 1.0, 1.0])
    patch, _ = extract_patch(image, None, origin, tuple(size), matrix)
    out = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), axis=-1)
    centre = origin + (size - 1) / 2
    expected = ((out - (size - 1) / 2) @ matrix.T + centre) @ slope
    np.testing.assert_allclose(patch.numpy()[0], expected, atol=2e-4)


def test_rotated_object_stays_inside_its_transformed_box(rng):
    image, instance_map = _instances(rng, shape=(24, 22, 20))
    boxes, ids = boxes_from_instance_mask(instance_map)
    for _ in range(5):
        matrix = rotation_matrix(rng.uniform(-0.5, 0.5, size=3)) / rng.uniform(0.7, 1.4)
        origin = rng.integers(-2, 6, size=3)
        _, map_patch = extract_patch(image, instance_map, origin, (16, 16, 16), matrix)
        hulls = transform_boxes(boxes, origin, (16, 16, 16), matrix)
        exact, present = boxes_from_instance_mask(map_patch)
        for box, instance in zip(exact, present):
            hull = hulls[list(ids).index(instance)]
            assert np.all(box[:3] >= np.floor(hull[:3]) - 1) and np.all(box[3:] <= np.ceil(hull[3:]) + 1)


def test_patch_of_a_small_volume_is_padded_to_full_size(rng):
    image = rng.normal(size=(1, 3, 4, 2)).astype(np.float32) + 10
    instance_map = np.ones((3, 4, 2), dtype=np.int16)
    for matrix in (None, rotation_matrix([0.1, 0.2, 0.3])):
        patch, map_patch = extract_patch(image, instance_map, np.array([-2, -1, -3]), (6, 6, 6), matrix)
        assert patch.shape == (1, 6, 6, 6) and map_patch.shape == (6, 6, 6)
        assert patch[0, 0, 0, 0] == 0.0 and map_patch[0, 0, 0] == 0
    np.testing.assert_array_equal(patch.numpy().shape, (1, 6, 6, 6))


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_gaussian_blur_matches_scipy(rng, sigma):
    image = rng.normal(size=(2, 9, 8, 7)).astype(np.float32)
    blurred = gaussian_blur(torch.from_numpy(image), sigma).numpy()
    for channel in range(2):
        expected = ndimage.gaussian_filter(image[channel].astype(np.float64), sigma, mode="nearest", truncate=3.0)
        np.testing.assert_allclose(blurred[channel], expected, atol=1e-5)


def test_gamma_and_contrast_keep_statistics(rng):
    image = torch.from_numpy(rng.normal(size=(2, 6, 6, 6)).astype(np.float32))
    np.testing.assert_allclose(adjust_gamma(image, 1.0), image, atol=1e-5)
    gamma = adjust_gamma(image, 1.4)
    assert not torch.allclose(gamma, image, atol=1e-2)
    np.testing.assert_allclose(gamma.mean(dim=(1, 2, 3)), image.mean(dim=(1, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(gamma.std(dim=(1, 2, 3)), image.std(dim=(1, 2, 3)), atol=1e-4)
    np.testing.assert_allclose(adjust_contrast(image, 1.0), image, atol=1e-6)
    stronger = adjust_contrast(image, 1.25)
    assert torch.all(stronger.amax(dim=(1, 2, 3)) <= image.amax(dim=(1, 2, 3)))
    assert torch.all(stronger.amin(dim=(1, 2, 3)) >= image.amin(dim=(1, 2, 3)))
    weaker = adjust_contrast(image, 0.5)
    np.testing.assert_allclose(weaker.std(dim=(1, 2, 3)), 0.5 * image.std(dim=(1, 2, 3)), rtol=1e-5)


def test_intensity_augmentation_is_seeded_and_follows_probabilities(rng):
    image = torch.from_numpy(rng.normal(size=(1, 6, 6, 6)).astype(np.float32))
    assert torch.equal(augment_intensity(image, NOTHING, rng), image)
    always = AugmentationSettings(noise_probability=1, blur_probability=1, brightness_probability=1,
                                  contrast_probability=1, gamma_probability=1)
    first = augment_intensity(image, always, np.random.default_rng(5))
    assert torch.equal(first, augment_intensity(image, always, np.random.default_rng(5)))
    assert not torch.allclose(first, augment_intensity(image, always, np.random.default_rng(6)))
    assert not torch.allclose(first, image, atol=1e-2)


def test_boxes_from_a_transformed_map_cover_every_voxel_and_are_tight(rng):
    from shared.data.sampling import boxes_of_patch_instances

    image, instance_map = _instances(rng, shape=(24, 22, 20))
    matrix = rotation_matrix([0.4, -0.3, 0.2]) / 1.2 @ np.diag([1.0, -1.0, 1.0])
    _, map_patch = extract_patch(image, instance_map, np.array([1, 2, 0]), (16, 16, 16), matrix)
    boxes, labels, ids = boxes_of_patch_instances(map_patch, np.array([1, 2]), np.array([0, 1]))
    assert len(ids) == 2
    for box, instance in zip(boxes, ids):
        voxels = np.argwhere(map_patch == instance)
        np.testing.assert_array_equal(voxels.min(0), box[:3])
        np.testing.assert_array_equal(voxels.max(0) + 1, box[3:])
