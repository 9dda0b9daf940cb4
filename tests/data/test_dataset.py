from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from monai.transforms import Compose, RandGaussianNoised, RandGaussianSmoothd

from shared.data.dataset import DetectionPatchDataset, ValidationCaseDataset, collate_detection
from shared.data.transforms_chains import intensity_augmentation, training_chain
from shared.data.transforms_sampling import RandDetectionPatchd, sample_detection_patch
from shared.data.transforms_spatial import RandMirrorPatchd, RandRotatePatchd, RandZoomPatchd
from shared.data.cache import case_files, read_case
from shared.boxes.rasterize import rasterize_boxes
from shared.io.errors import InputError

CASES = ["masked", "boxes_only", "small", "empty"]
HEAVY = "heavy"  # every geometric transform on every sample


def _chain(patch_size, batch_size, foreground_fraction, augmentation):
    if augmentation != HEAVY:
        return training_chain(patch_size, batch_size=batch_size, foreground_fraction=foreground_fraction,
                              augment=augmentation is not None)
    patch = RandDetectionPatchd(patch_size, batch_size=batch_size, foreground_fraction=foreground_fraction)
    return Compose([RandMirrorPatchd(0.5), RandZoomPatchd(1.0), RandRotatePatchd(1.0), patch, *intensity_augmentation()])


def _dataset(cache, cases=CASES, *, augmentation="default", foreground_fraction=0.5, batch_size=4, **overrides):
    settings = dict(iterations_per_epoch=6, batch_size=batch_size, seed=3)
    settings.update(overrides)
    chain = _chain((8, 8, 8), batch_size, foreground_fraction, augmentation)
    return DetectionPatchDataset(cache, cases, chain, **settings)


def draw_training_sample(record, patch_size, rng, *, foreground):
    data = {"image": record.image, "mask": record.mask, "boxes": record.boxes, "labels": record.labels,
            "instances": record.instances, "source": record.source}
    return sample_detection_patch(data, patch_size, rng, foreground=foreground)


def _check_targets(sample):
    """Boxes inside the patch; seg voxels of each class inside a box of that class; every box face touched."""
    boxes, labels, seg = sample["boxes"].numpy(), sample["labels"].numpy(), sample["seg"][0].numpy()
    assert np.all(boxes[:, :3] >= 0) and np.all(boxes[:, 3:] <= np.array(seg.shape))
    assert np.all(boxes[:, 3:] > boxes[:, :3])
    covered = np.zeros(seg.shape, dtype=bool)
    for box, label in zip(np.ceil(boxes - 0.5).astype(int), labels):  # voxels whose centre is inside
        inside = seg[box[0]:box[3], box[1]:box[4], box[2]:box[5]] == label + 1
        covered[box[0]:box[3], box[1]:box[4], box[2]:box[5]] |= inside
        for axis in range(3):  # tight: the first and last slab of the box hold the object
            assert inside.take(0, axis=axis).any() and inside.take(-1, axis=axis).any()
    assert not (seg > 0)[~covered].any()


def test_samples_are_full_size_with_typed_targets(tiny_cache):
    dataset = _dataset(tiny_cache, augmentation=HEAVY)
    assert len(dataset) == 24
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["image"].shape == (1, 8, 8, 8)
        assert sample["image"].dtype == torch.float32 and sample["seg"].shape == (1, 8, 8, 8)
        assert sample["seg"].dtype == torch.int64 and sample["labels"].dtype == torch.int64
        assert sample["boxes"].dtype == torch.float32 and sample["boxes"].shape[1:] == (6,)
        assert len(sample["labels"]) == len(sample["boxes"])
        _check_targets(sample)


def test_masked_case_with_full_geometry_gives_exact_boxes_and_classes(tiny_cache):
    dataset = _dataset(tiny_cache, ["masked"], augmentation=HEAVY, foreground_fraction=1.0, iterations_per_epoch=10)
    labels_seen = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        assert len(sample["boxes"]) >= 1  # foreground patches hold their object
        _check_targets(sample)
        labels_seen |= set(sample["labels"].tolist())
    assert labels_seen == {0, 1}


def test_boxes_only_seg_is_the_rasterised_cropped_boxes(tiny_cache):
    dataset = _dataset(tiny_cache, ["boxes_only"], foreground_fraction=1.0)
    found = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        expected = rasterize_boxes(sample["boxes"].numpy(), (8, 8, 8), ids=sample["labels"].numpy() + 1, dtype=np.int64)
        np.testing.assert_array_equal(sample["seg"][0].numpy(), expected)
        found += len(sample["boxes"])
    # A foreground patch holds a point of its box, but a box mostly outside the patch is dropped (50 % rule).
    assert found >= 0.75 * len(dataset)


def test_plain_crop_of_boxes_only_case_is_exact(tiny_cache):
    record = read_case(tiny_cache, "boxes_only")
    sample = draw_training_sample(record, (20, 18, 16), np.random.default_rng(0), foreground=False)
    np.testing.assert_array_equal(sample["boxes"].numpy(), record.boxes)
    np.testing.assert_array_equal(sample["image"].numpy(), np.load(case_files(tiny_cache, "boxes_only").image))


def test_seg_is_class_plus_one_of_the_instance_map(tiny_cache):
    record = read_case(tiny_cache, "masked")
    sample = draw_training_sample(record, (20, 18, 16), np.random.default_rng(0), foreground=False)
    instance_map = np.load(case_files(tiny_cache, "masked").mask)
    np.testing.assert_array_equal(sample["seg"][0].numpy(), np.array([0, 1, 0, 2])[instance_map])
    np.testing.assert_array_equal(sample["labels"].numpy(), [0, 1])


def test_small_volume_is_padded_with_zero(tiny_cache):
    record = read_case(tiny_cache, "small")
    sample = draw_training_sample(record, (8, 8, 8), np.random.default_rng(0), foreground=True)
    image = sample["image"][0].numpy()
    assert image.shape == (8, 8, 8)
    assert (image == 0).sum() == 8**3 - 6 * 5 * 4  # padding; the volume itself is about 5, never 0
    np.testing.assert_array_equal(sample["labels"].numpy(), [1])


def test_empty_case_and_empty_patch_give_no_boxes(tiny_cache):
    empty = _dataset(tiny_cache, ["empty"], foreground_fraction=1.0)[3]
    assert empty["boxes"].shape == (0, 6) and empty["labels"].shape == (0,) and not empty["seg"].any()
    record = read_case(tiny_cache, "masked")
    rng = np.random.default_rng(0)
    shapes = [draw_training_sample(record, (2, 2, 2), rng, foreground=False)["boxes"].shape for _ in range(40)]
    assert (0, 6) in shapes


def test_foreground_fraction_holds_over_many_draws(tiny_cache, case_writer):
    # One 2^3 object in a 40^3 volume: a random 8^3 patch meets it with probability (9/33)^3 = 2 %.
    instance_map = np.zeros((40, 40, 40), dtype=np.int16)
    instance_map[30:32, 5:7, 20:22] = 1
    case_writer(tiny_cache, "sparse", np.ones((1, 40, 40, 40)), mask=instance_map, labels=[0])
    dataset = _dataset(tiny_cache, ["sparse"], augmentation=None, iterations_per_epoch=100, batch_size=3,
                       foreground_fraction=0.5)
    samples = [dataset[index] for index in range(len(dataset))]
    hits = np.array([len(sample["boxes"]) > 0 for sample in samples]).reshape(-1, 3)
    flags = np.array([sample["foreground"] for sample in samples]).reshape(-1, 3)
    assert hits[:, 2].all() and flags[:, 2].all() and not flags[:, 0].any()
    assert hits[flags].all() and hits[~flags].mean() < 0.08
    assert abs(flags.mean() - 0.5) < 4 * np.sqrt(0.25 / 100) / 3  # only position 1 is random
    assert abs(hits.mean() - 0.5) < 0.08
    rotated = _dataset(tiny_cache, ["sparse"], augmentation=HEAVY, iterations_per_epoch=40, batch_size=1,
                       foreground_fraction=1.0)
    assert all(len(rotated[index]["boxes"]) for index in range(len(rotated)))  # the object survives geometry


def test_samples_are_deterministic_per_seed_epoch_index_and_rank(tiny_cache):
    dataset = _dataset(tiny_cache)
    first = dataset[5]
    again = _dataset(tiny_cache)[5]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["boxes"], again["boxes"])
    dataset.set_epoch(1)
    assert not torch.equal(first["image"], dataset[5]["image"])
    dataset.set_epoch(0)
    assert torch.equal(first["image"], dataset[5]["image"])
    assert not torch.equal(first["image"], _dataset(tiny_cache, rank=1)[5]["image"])
    assert not torch.equal(first["image"], _dataset(tiny_cache, seed=4)[5]["image"])


def test_indices_past_the_epoch_continue_into_the_next_epochs(tiny_cache):
    """The trainer's ResumableBatchSampler hands out global indices."""
    dataset = _dataset(tiny_cache)
    continued = dataset[len(dataset) + 5]
    dataset.set_epoch(1)
    assert torch.equal(continued["image"], dataset[5]["image"])
    with pytest.raises(IndexError):
        dataset[-1]


def test_dataloader_with_two_workers_is_deterministic(tiny_cache):
    dataset = _dataset(tiny_cache, iterations_per_epoch=3)
    serial = [collate_detection([dataset[b * 4 + i] for i in range(4)]) for b in range(3)]
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_detection)
    for run in range(2):
        batches = list(loader)
        assert len(batches) == 3
        for batch, expected in zip(batches, serial):
            assert batch["image"].shape == (4, 1, 8, 8, 8)
            assert torch.equal(batch["image"], expected["image"])
            assert torch.equal(batch["seg"], expected["seg"])
            assert all(torch.equal(a, b) for a, b in zip(batch["boxes"], expected["boxes"]))
    images = torch.cat([b["image"].flatten(1) for b in batches])
    assert len({tuple(row.tolist()) for row in images}) == 12  # workers do not repeat each other


def test_collate_stacks_images_and_lists_boxes(tiny_cache):
    dataset = _dataset(tiny_cache, ["masked", "empty"], augmentation=None)
    batch = collate_detection([dataset[i] for i in range(4)])
    assert batch["image"].shape == (4, 1, 8, 8, 8) and batch["seg"].shape == (4, 1, 8, 8, 8)
    assert len(batch["boxes"]) == 4 and all(b.shape[1:] == (6,) for b in batch["boxes"])
    assert len(batch["case"]) == 4


def test_validation_dataset_returns_whole_cases(tiny_cache):
    dataset = ValidationCaseDataset(tiny_cache, ["masked", "empty"])
    item = dataset[0]
    assert item["image"].shape == (1, 20, 18, 16) and item["case"] == "masked"
    np.testing.assert_array_equal(item["boxes"].numpy(), [[3, 4, 2, 6, 8, 5], [12, 9, 8, 17, 12, 14]])
    np.testing.assert_array_equal(item["labels"].numpy(), [0, 1])
    assert item["affine"].shape == (4, 4) and dataset[1]["boxes"].shape == (0, 6)


def test_bad_cache_input_names_the_file(tiny_cache):
    with pytest.raises(InputError, match="missing.json"):
        read_case(tiny_cache, "missing")
    meta = json.loads(case_files(tiny_cache, "masked").record.read_text())
    case_files(tiny_cache, "bad").record.write_text(json.dumps({**meta, "labels": [0]}))
    with pytest.raises(InputError, match="bad.json.*2 boxes but 1 labels"):
        read_case(tiny_cache, "bad")
    case_files(tiny_cache, "masked").image.write_bytes(np.save.__doc__.encode()[:10])
    with pytest.raises(InputError, match="masked_image.npy"):
        read_case(tiny_cache, "masked")
    mask = np.load(case_files(tiny_cache, "masked").mask)
    mask[0, 0, 0] = 9
    np.save(case_files(tiny_cache, "stray").mask, mask)
    np.save(case_files(tiny_cache, "stray").image, np.zeros((1,) + mask.shape, np.float32))
    case_files(tiny_cache, "stray").record.write_text(json.dumps({**meta, "case": "stray"}))
    with pytest.raises(InputError, match=r"stray.json.*\[9\]"):
        draw_training_sample(read_case(tiny_cache, "stray"), (20, 18, 16), np.random.default_rng(0),
                             foreground=False)
    chain = training_chain(8, batch_size=1)
    with pytest.raises(InputError, match="no cases"):
        DetectionPatchDataset(tiny_cache, [], chain, iterations_per_epoch=1, batch_size=1)
    with pytest.raises(ValueError, match="list of case ids"):
        DetectionPatchDataset(tiny_cache, "empty", chain, iterations_per_epoch=1, batch_size=1)
    with pytest.raises(ValueError, match="foreground_fraction"):
        RandDetectionPatchd(8, batch_size=1, foreground_fraction=1.5)


@pytest.mark.slow
def test_realistic_patch_with_full_augmentation(tiny_cache, case_writer):
    rng = np.random.default_rng(0)
    instance_map = np.zeros((128, 120, 100), dtype=np.int16)
    for instance in range(1, 6):
        low = rng.integers(10, 80, size=3)
        instance_map[tuple(slice(a, a + rng.integers(3, 15)) for a in low)] = instance
    case_writer(tiny_cache, "large", rng.normal(size=(1, 128, 120, 100)), mask=instance_map, labels=[0, 1, 0, 1, 0])
    chain = Compose([*_chain(96, 2, 0.5, HEAVY).transforms, RandGaussianNoised("image", prob=1.0),
                     RandGaussianSmoothd("image", prob=1.0)])
    dataset = DetectionPatchDataset(tiny_cache, ["large"], chain, iterations_per_epoch=4, batch_size=2)
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["image"].shape == (1, 96, 96, 96)
        _check_targets(sample)
