import numpy as np

from shared.data.synthetic.lidc import load_lidc_nodules, native_mask, nodule_mask


def test_nodules_have_lidc_like_sizes_ratings_and_groups():
    nodules = load_lidc_nodules()
    assert 2000 < len(nodules) < 3500  # 6,859 annotations by up to 4 readers each
    diameters = np.array([n.diameter_mm for n in nodules])
    assert diameters.min() >= 3.0 - 1e-6 and 6 < np.median(diameters) < 12 and diameters.max() < 80
    sizes = np.array([len(n.annotation_ids) for n in nodules])
    assert np.mean(sizes <= 4) > 0.99
    labels = np.array([n.label for n in nodules])
    assert 0.3 < labels.mean() < 0.7
    # LIDC's malignant nodules are larger on average
    assert np.median(diameters[labels == 1]) > np.median(diameters[labels == 0])
    assert all(1 <= n.malignancy <= 5 and 1 <= n.texture <= 5 for n in nodules)


def test_rasterised_mask_keeps_physical_size_when_resampled():
    nodule = next(n for n in load_lidc_nodules() if 10 < n.diameter_mm < 15)
    native, spacing = native_mask(nodule.annotation_ids[0])
    resampled = nodule_mask(nodule.annotation_ids[0], (1.4, 1.4, 2.5))
    native_volume = native.sum() * np.prod(spacing)
    assert abs(resampled.sum() * 1.4 * 1.4 * 2.5 / native_volume - 1) < 0.3
    extent = max(resampled.shape[0], resampled.shape[1]) * 1.4
    assert abs(extent - nodule.diameter_mm) < 3.0
    assert not resampled.flags.writeable  # shared by the cache


def test_tiny_nodule_keeps_a_voxel():
    nodule = min(load_lidc_nodules(), key=lambda n: n.diameter_mm)
    assert nodule_mask(nodule.annotation_ids[0], (8.0, 8.0, 8.0)).sum() >= 1
