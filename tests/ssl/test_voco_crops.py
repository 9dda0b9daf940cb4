"""VoCo crops: labels against a voxel count, crops against the image they were cut from, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandFlip, RandRotate90

from shared.ssl.voco_crops import VoCoCropsd, base_grid_starts, overlap_fractions


def brute_force_overlaps(target_starts, base_starts, crop_size, margin):
    """Counts shared voxels of boolean masks drawn on a canvas around the region."""
    canvas = np.array([40, 40, 40])

    def mask(start):
        grid = np.zeros(canvas, dtype=bool)
        corner = np.asarray(start) + margin
        grid[tuple(slice(a, a + s) for a, s in zip(corner, crop_size))] = True
        return grid

    bases = [mask(start) for start in base_starts]
    return np.array([[(mask(t) & b).sum() / np.prod(crop_size) for b in bases] for t in target_starts])


def test_overlap_labels_equal_a_voxel_count_on_random_crops():
    rng = np.random.default_rng(0)
    crop_size, counts, margin = (5, 4, 3), (3, 2, 2), 4
    base_starts = base_grid_starts(counts, crop_size)
    region = np.multiply(counts, crop_size)
    targets = np.stack([rng.integers(-margin, r - s + margin + 1, size=30) for r, s in zip(region, crop_size)], -1)
    labels = overlap_fractions(targets, base_starts, crop_size)
    expected = brute_force_overlaps(targets, base_starts, crop_size, margin)
    np.testing.assert_allclose(labels, expected, rtol=0, atol=1e-7)
    inside = ((targets >= 0) & (targets + crop_size <= region)).all(1)
    assert inside.any() and (~inside).any()
    np.testing.assert_allclose(labels[inside].sum(1), 1.0, atol=1e-6)
    assert (labels[~inside].sum(1) < 1).all()


def test_crops_are_cut_from_the_region_and_labelled():
    image = torch.arange(2 * 20 * 18 * 9, dtype=torch.float32).reshape(2, 20, 18, 9)
    transform = VoCoCropsd("image", base_counts=(2, 3, 1), crop_size=(4, 5, 6), num_targets=7)
    transform.set_random_state(3)
    out = transform({"image": image, "name": "case"})
    assert "image" not in out and out["name"] == "case"
    assert out["base_crops"].shape == (6, 2, 4, 5, 6) and out["target_crops"].shape == (7, 2, 4, 5, 6)
    assert out["overlaps"].shape == (7, 6) and out["overlaps"].dtype == torch.float32
    assert out["base_positions"].shape == (6, 3) and out["target_positions"].shape == (7, 3)
    region = transform.region_start
    assert (region >= 0).all() and (region + [8, 15, 6] <= [20, 18, 9]).all()
    for key, positions in (("base_crops", "base_positions"), ("target_crops", "target_positions")):
        for crop, start in zip(out[key], out[positions].numpy()):
            corner = region + start
            expected = image[(slice(None), *(slice(a, a + s) for a, s in zip(corner, (4, 5, 6))))]
            assert torch.equal(crop, expected)
    # the base crops tile the region: each voxel of it exactly once
    tiled = torch.cat([crop.flatten() for crop in out["base_crops"][:, 0]])
    inside = image[0, region[0]:region[0] + 8, region[1]:region[1] + 15, region[2]:region[2] + 6]
    assert torch.equal(tiled.sort().values, inside.flatten().sort().values)
    torch.testing.assert_close(out["overlaps"].sum(1), torch.ones(7))
    expected = overlap_fractions(out["target_positions"].numpy(), out["base_positions"].numpy(), (4, 5, 6))
    np.testing.assert_array_equal(out["overlaps"].numpy(), expected)


def test_small_volumes_are_padded_and_margins_let_targets_leave_the_region():
    image = torch.ones(1, 6, 6, 3)
    transform = VoCoCropsd("image", base_counts=(2, 2, 1), crop_size=4, num_targets=50, target_margin=(2, 2, 0),
                           pad_value=-5.0, keep_source=True)
    transform.set_random_state(0)
    out = transform({"image": image})
    assert torch.equal(out["image"], image)
    assert out["base_crops"].shape == (4, 1, 4, 4, 4)
    # padded to 12 × 12 × 4 (region 8 × 8 × 4 and 2 voxels of margin on each side of X and Y)
    assert (out["base_crops"] == -5.0).any() and (out["base_crops"] == 1.0).any()
    starts = out["target_positions"].numpy()
    assert starts[:, :2].min() < 0 and (starts[:, :2] + 4).max() > 8 and (starts[:, 2] == 0).all()
    assert (starts[:, :2] >= -2).all() and (starts[:, :2] + 4 <= 10).all()
    assert out["overlaps"].sum(1).min() < 1


def test_set_random_state_repeats_crops_and_the_crop_transform():
    image = torch.randn(1, 24, 24, 10)
    flips = Compose([RandFlip(prob=0.5, spatial_axis=0), RandRotate90(prob=0.5, spatial_axes=(0, 1))])

    def run(seed):
        transform = VoCoCropsd("image", base_counts=(2, 2, 1), crop_size=(8, 8, 8), num_targets=4,
                               crop_transform=flips)
        transform.set_random_state(seed)
        return transform({"image": image})

    first, again, other = run(7), run(7), run(8)
    for key in ("base_crops", "target_crops", "overlaps", "target_positions"):
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["target_positions"], other["target_positions"])
    assert type(first["base_crops"]) is torch.Tensor  # plain tensors: a crop's metadata would be wrong
    # the crop transform ran: some base crop differs from its plain cut
    plain = VoCoCropsd("image", base_counts=(2, 2, 1), crop_size=(8, 8, 8), num_targets=4)
    plain.set_random_state(7)
    assert not torch.equal(plain({"image": image})["base_crops"], first["base_crops"])


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"keys": ["image", "label"]}, "one image"),
        ({"crop_size": 0}, "crop_size"),
        ({"base_counts": (4, 4)}, "base_counts"),
        ({"target_margin": -1}, "target_margin"),
        ({"num_targets": 0}, "num_targets"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        VoCoCropsd(**arguments)


def test_image_without_channel_axis_raises():
    with pytest.raises(ValueError, match=r"\(C, X, Y, Z\)"):
        VoCoCropsd("image", base_counts=1, crop_size=4)({"image": torch.zeros(8, 8, 8)})
