import itertools

import numpy as np
import pytest
from monai.data.box_utils import convert_box_mode

from shared.boxes.convention import (boxes_from_instance_mask, boxes_voxel_to_world, boxes_world_to_voxel, empty_boxes,
                                     is_axis_aligned, points_voxel_to_world, points_world_to_voxel)


def test_one_voxel_object_has_width_one():
    mask = np.zeros((5, 6, 7), dtype=np.int16)
    mask[2, 3, 4] = 7
    boxes, ids = boxes_from_instance_mask(mask)
    np.testing.assert_array_equal(boxes, [[2, 3, 4, 3, 4, 5]])
    assert ids.tolist() == [7]


def test_boxes_from_mask_sorted_by_id_and_channel_axis_accepted():
    mask = np.zeros((1, 8, 8, 8), dtype=np.int32)
    mask[0, 5:7, 0:2, 1:4] = 9
    mask[0, 0:3, 2:5, 6:8] = 2
    boxes, ids = boxes_from_instance_mask(mask)
    assert ids.tolist() == [2, 9]
    np.testing.assert_array_equal(boxes, [[0, 2, 6, 3, 5, 8], [5, 0, 1, 7, 2, 4]])


def test_empty_mask_gives_empty_boxes():
    boxes, ids = boxes_from_instance_mask(np.zeros((3, 3, 3)))
    assert boxes.shape == (0, 6) and ids.shape == (0,)
    assert empty_boxes().shape == (0, 6)
    assert boxes_voxel_to_world(boxes, np.eye(4)).shape == (0, 6)
    assert boxes_world_to_voxel([], np.eye(4)).shape == (0, 6)


def test_mask_must_be_3d():
    with pytest.raises(ValueError):
        boxes_from_instance_mask(np.zeros((3, 3)))


def test_half_voxel_convention_by_hand():
    # spacing 2 mm, origin (RAS) at 10, 20, 30: voxel 0's centre is there, its border 1 mm before
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    world = boxes_voxel_to_world(np.array([[0, 0, 0, 1, 1, 1]]), affine)
    # centre x RAS 10 → LPS -10, y RAS 20 → -20, z 30; one voxel = 2 mm wide
    np.testing.assert_allclose(world, [[-10, -20, 30, 2, 2, 2]])


def test_world_voxel_round_trip_oblique_flipped(rng):
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, -0.8, 1.25])
    affine[:3, 3] = [-100, 50, 20]
    # an axis-aligned flip keeps boxes boxes, so the round trip is exact
    flipped = np.diag([-0.7, 0.8, 1.25, 1.0])
    boxes = np.array([[1, 2, 3, 4, 6, 9], [0, 0, 0, 1, 1, 1]], dtype=np.float32)
    np.testing.assert_allclose(boxes_world_to_voxel(boxes_voxel_to_world(boxes, flipped), flipped), boxes, atol=1e-5)
    points = rng.uniform(0, 10, size=(5, 3))
    np.testing.assert_allclose(points_world_to_voxel(points_voxel_to_world(points, affine), affine), points, atol=1e-9)


def test_world_box_matches_monai_corner_transform():
    affine = np.diag([0.7, 0.7, 1.25, 1.0])
    affine[:3, 3] = [-180.0, -150.0, -300.0]
    boxes = np.array([[10, 20, 30, 15, 26, 33]], dtype=np.float64)
    world = boxes_voxel_to_world(boxes, affine)
    corners = np.asarray(convert_box_mode(world, src_mode="cccwhd", dst_mode="xyzxyz"))
    # LPS x of the low index edge: -(origin + (index - 0.5) * spacing)
    assert corners[0, 3] == pytest.approx(-(-180.0 + (10 - 0.5) * 0.7))
    assert world[0, 3:].tolist() == pytest.approx([5 * 0.7, 6 * 0.7, 3 * 1.25])


# ---- oblique and sheared affines: the axis-aligned hull of all 8 corners --------------------------------
# The references below transform voxels by hand (RAS affine, then LPS signs), independently of the module.

LPS = np.array([-1.0, -1.0, 1.0])
SPACING = np.diag([0.8, 0.9, 1.5])


def _rotation(axis, degrees: float) -> np.ndarray:
    """Rotation matrix (3, 3) by ``degrees`` about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.deg2rad(degrees)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _affine(linear: np.ndarray, origin=(-20.0, 15.0, 5.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = origin
    return affine


SHEAR = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, -0.3], [0.0, 0.0, 1.0]])
OBLIQUE = {
    "10deg": _affine(_rotation([1, 2, 3], 10) @ SPACING),
    "30deg": _affine(_rotation([1, 2, 3], 30) @ SPACING),
    "45deg": _affine(_rotation([1, 2, 3], 45) @ SPACING),
    "45deg_in_plane_flipped": _affine(_rotation([0, 0, 1], 45) @ np.diag([0.8, -0.9, 1.5])),
    "shear": _affine(SHEAR @ SPACING),
}


def _to_world(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxel-centre coordinates (N, 3) → world LPS mm (N, 3)."""
    return (points @ affine[:3, :3].T + affine[:3, 3]) * LPS


def _voxel_corners(indices: np.ndarray) -> np.ndarray:
    """The 8 corners (N * 8, 3) of the voxels at ``indices`` (N, 3), in voxel-centre coordinates."""
    offsets = np.array(list(np.ndindex(2, 2, 2)), dtype=np.float64) - 0.5
    return (indices[:, None, :] + offsets[None]).reshape(-1, 3)


def _xyzxyz(cccwhd: np.ndarray) -> np.ndarray:
    # by hand: MONAI's convert_box_mode rounds half-sizes to float32 on the way to corners
    cccwhd = np.asarray(cccwhd, dtype=np.float64)
    return np.concatenate([cccwhd[:, :3] - cccwhd[:, 3:] / 2, cccwhd[:, :3] + cccwhd[:, 3:] / 2], axis=1)


def _world_box_of(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(1, 6) cccwhd world box of a mask's object as a perfect annotator draws it: the hull of its voxels."""
    corners = _to_world(_voxel_corners(np.argwhere(mask).astype(np.float64)), affine)
    return np.concatenate([(corners.min(0) + corners.max(0)) / 2, corners.max(0) - corners.min(0)])[None]


def _world_cube_object(affine: np.ndarray, shape=(20, 20, 20), half_side_mm: float = 3.0) -> np.ndarray:
    """Instance map of the voxels whose centres lie in a world-axis-aligned cube at the image centre."""
    indices = np.argwhere(np.ones(shape, dtype=bool)).astype(np.float64)
    centre = _to_world((np.asarray(shape, dtype=np.float64)[None] - 1) / 2, affine)
    inside = np.all(np.abs(_to_world(indices, affine) - centre) <= half_side_mm, axis=1)
    return inside.reshape(shape).astype(np.int16)


@pytest.mark.parametrize("affine", OBLIQUE.values(), ids=OBLIQUE.keys())
def test_world_box_of_an_object_becomes_a_voxel_box_containing_its_voxels(affine):
    mask = _world_cube_object(affine)
    assert mask.sum() >= 27  # an object of a few voxels per axis
    truth, _ = boxes_from_instance_mask(mask)
    voxel = boxes_world_to_voxel(_world_box_of(mask, affine), affine)
    assert voxel.dtype == np.float32
    assert np.all(voxel[0, :3] <= truth[0, :3] + 1e-4), (voxel, truth)
    assert np.all(voxel[0, 3:] >= truth[0, 3:] - 1e-4), (voxel, truth)


@pytest.mark.parametrize("affine", OBLIQUE.values(), ids=OBLIQUE.keys())
def test_voxel_box_of_a_cube_becomes_a_world_box_containing_it(affine):
    mask = np.zeros((12, 12, 12), dtype=np.int16)
    mask[2:9, 3:10, 1:8] = 1  # a 7-voxel cube
    boxes, _ = boxes_from_instance_mask(mask)
    world = boxes_voxel_to_world(boxes, affine)
    assert world.dtype == np.float64
    assert np.all(world[0, 3:] > 1.0), world  # positive size, at least about one voxel
    low, high = _xyzxyz(world)[0, :3], _xyzxyz(world)[0, 3:]
    indices = np.argwhere(mask).astype(np.float64)
    for points in (_to_world(indices, affine), _to_world(_voxel_corners(indices), affine)):  # centres, then extents
        assert np.all(points >= low - 1e-9) and np.all(points <= high + 1e-9)


@pytest.mark.parametrize("degrees", [10, 30, 45])
def test_rotated_box_grows_by_the_documented_factor(degrees):
    # 1 mm voxels rotated in the x-y plane: a w x h x d box becomes (w|cos| + h|sin|) x (w|sin| + h|cos|) x d
    affine = _affine(_rotation([0, 0, 1], degrees))
    cos, sin = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    world = boxes_voxel_to_world(np.array([[10, 10, 10, 17, 15, 13]]), affine)
    np.testing.assert_allclose(world[0, 3:], [7 * cos + 5 * sin, 7 * sin + 5 * cos, 3], rtol=1e-12)
    np.testing.assert_allclose(world[0, :3], _to_world(np.array([[13.0, 12.0, 11.0]]), affine)[0], atol=1e-12)
    # back to voxels grows again (hull of a hull): the round trip contains the box and keeps its centre
    back = boxes_world_to_voxel(world, affine)[0].astype(np.float64)
    np.testing.assert_allclose(back[3:] - back[:3], [7 + 10 * cos * sin, 5 + 14 * cos * sin, 3], rtol=1e-6)
    np.testing.assert_allclose((back[3:] + back[:3]) / 2, [13.5, 12.5, 11.5], atol=1e-5)


def test_five_voxel_object_at_30_degrees_keeps_its_height():
    # the case: from the object's world box, two corners made its training box 2.5 voxels tall
    affine = _affine(_rotation([0, 0, 1], 30))
    mask = np.zeros((14, 14, 14), dtype=np.int16)
    mask[4:9, 4:9, 4:9] = 1
    world = _world_box_of(mask, affine)
    side = 5 * (np.cos(np.pi / 6) + np.sin(np.pi / 6))  # the world box: 6.83 mm in x and y
    np.testing.assert_allclose(world[0, 3:], [side, side, 5], rtol=1e-12)
    voxel = boxes_world_to_voxel(world, affine)[0].astype(np.float64)
    grown = side * (np.cos(np.pi / 6) + np.sin(np.pi / 6))  # 9.33 voxels, centred on the object
    low, high = 6.5 - grown / 2, 6.5 + grown / 2
    np.testing.assert_allclose(voxel, [low, low, 4, high, high, 9], atol=1e-5)


def test_sheared_box_by_hand():
    # x = i - 0.5 j: a 4 x 6 x 2 voxel box spans 4 + 0.5 * 6 = 7 mm in x (two corners gave 1 mm)
    shear = _affine(np.array([[1, -0.5, 0], [0, 1, 0], [0, 0, 1]]))
    world = boxes_voxel_to_world(np.array([[0, 0, 0, 4, 6, 2]]), shear)
    np.testing.assert_allclose(world[0, 3:], [7, 6, 2], rtol=1e-12)


@pytest.mark.parametrize("affine", OBLIQUE.values(), ids=OBLIQUE.keys())
def test_oblique_round_trip_contains_the_box(affine):
    boxes = np.array([[2, 3, 1, 9, 10, 8], [0, 0, 0, 1, 1, 1]], dtype=np.float32)
    back = boxes_world_to_voxel(boxes_voxel_to_world(boxes, affine), affine)
    assert np.all(back[:, :3] <= boxes[:, :3] + 1e-5) and np.all(back[:, 3:] >= boxes[:, 3:] - 1e-5)
    volume = np.prod(back[:, 3:] - back[:, :3], axis=1)
    assert np.all(volume > 1.1 * np.prod(boxes[:, 3:] - boxes[:, :3], axis=1))  # oblique: not an identity


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(3))))
def test_axis_aligned_affines_with_flips_and_permutations_round_trip_exactly(permutation):
    spacing = np.array([0.7, 0.8, 1.25])
    boxes = np.array([[1.5, 2, 3, 4, 6.25, 9], [0, 0, 0, 1, 1, 1]], dtype=np.float32)
    for signs in itertools.product([-1.0, 1.0], repeat=3):
        linear = np.zeros((3, 3))
        linear[list(permutation), [0, 1, 2]] = np.asarray(signs) * spacing  # array axis k → world axis perm[k]
        affine = _affine(linear, origin=(-100.0, 50.0, 20.0))
        world = boxes_voxel_to_world(boxes, affine)
        sizes = np.zeros((2, 3))
        sizes[:, list(permutation)] = (boxes[:, 3:] - boxes[:, :3]) * spacing  # no enlargement at all
        np.testing.assert_allclose(world[:, 3:], sizes, rtol=1e-12)
        np.testing.assert_allclose(boxes_world_to_voxel(world, affine), boxes, atol=1e-5)
        np.testing.assert_allclose(boxes_voxel_to_world(boxes_world_to_voxel(world, affine), affine), world, atol=1e-4)


def test_is_axis_aligned():
    for permutation in itertools.permutations(range(3)):
        linear = np.zeros((3, 3))
        linear[list(permutation), [0, 1, 2]] = [-0.7, 0.8, 1.25]
        assert is_axis_aligned(_affine(linear))
    noisy = np.diag([0.7, 0.8, 1.25, 1.0])
    noisy[0, 1] = noisy[2, 0] = 3e-8  # a NIfTI qform's float32 noise
    assert is_axis_aligned(noisy)
    for name, affine in OBLIQUE.items():
        assert not is_axis_aligned(affine), name
    assert not is_axis_aligned(_affine(_rotation([0, 0, 1], 0.5)))


def test_world_to_voxel_keeps_float64_until_the_end():
    # MONAI's convert_box_mode rounds half-sizes to float32: 100.15 mm became 100.1500015, which put this
    # edge 1.5e-6 voxel off, 50 float32 steps at 0.35
    voxel = boxes_world_to_voxel(np.array([[0.0, 0.0, 100.0, 1.0, 1.0, 200.3]]), np.eye(4))
    assert voxel[0, 2] == np.float32(0.5 + (100.0 - 200.3 / 2))
