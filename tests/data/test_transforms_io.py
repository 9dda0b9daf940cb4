import numpy as np

from shared.data.transforms_io import LoadLabelMapd, LoadVolumed
from shared.io.images import load_volume
from tests._cases import write_scan


def test_loading_gives_the_readers_array_affine_and_the_grid_as_read(tmp_path, rng):
    entry = write_scan(tmp_path, "case0", rng=rng, channels=2)
    data = LoadLabelMapd("mask")(LoadVolumed("image")({"image": entry["image"], "mask": entry["mask"]}))
    volume = load_volume(entry["image"])
    np.testing.assert_array_equal(data["image"], volume.array)
    np.testing.assert_array_equal(data["affine"], volume.affine)
    assert data["image"].shape[0] == 2 and data["original_shape"] == list(volume.array.shape[1:])
    assert data["mask"].dtype == np.int16 and data["mask"].shape == volume.array.shape[1:] and data["mask"].any()
    assert LoadLabelMapd("mask")({"mask": None})["mask"] is None  # a boxes-only case
