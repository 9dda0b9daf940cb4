"""Reading a case in a transform chain: the scan (one file per channel, any format of
:mod:`shared.io.images`) and its instance map, as MONAI dictionary transforms.

:func:`shared.io.images.load_volume` is the one reader: it checks that every channel shares one grid
and gives MONAI's RAS affine, so the rest of the chain (spacing, boxes world → voxel) relies on it.
The transforms keep plain numpy arrays plus an ``affine`` key, which the geometry transforms of
:mod:`shared.data.transforms_geometry` read and update.
"""

from __future__ import annotations

import warnings
from typing import Any, Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from shared.io.images import load_label_map, load_volume


class LoadVolumed(MapTransform):
    """Read a scan: ``data[key]`` (a path, or one path per channel) → (C, X, Y, Z) float32.

    Also writes ``affine_key`` (the (4, 4) RAS affine), ``original_affine`` and ``original_shape``
    (the grid as read, which inference maps predictions back to), and ``sources`` (the files).

    Args:
        keys: the image key (one).
        affine_key: where the affine goes.
        warn_constant: warn when a channel holds a single value (usually an export or windowing error).
    """

    def __init__(self, keys: KeysCollection = "image", affine_key: str = "affine", *, warn_constant: bool = True,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.affine_key, self.warn_constant = affine_key, warn_constant

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        data = dict(data)
        for key in self.key_iterator(data):
            volume = load_volume(data[key])
            if self.warn_constant:
                _warn_if_constant(volume.array, volume.sources)
            data[key] = volume.array
            data[self.affine_key] = volume.affine
            data["original_affine"], data["original_shape"] = volume.affine.copy(), list(volume.array.shape[1:])
            data["sources"] = volume.sources
        return data


class LoadLabelMapd(MapTransform):
    """Read an instance map: ``data[key]`` (a path, or None for a boxes-only case) → (X, Y, Z) int16 or None."""

    def __init__(self, keys: KeysCollection = "mask", *, allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        data = dict(data)
        for key in self.key_iterator(data):
            if data[key] is not None and not isinstance(data[key], np.ndarray):
                data[key] = load_label_map(data[key]).astype(np.int16, copy=False)
        return data


def _warn_if_constant(array: np.ndarray, sources: list[str]) -> None:
    """A scan of one value normalises to all zeros: usually an export or windowing error, so say so."""
    for index, channel in enumerate(array):
        source = sources[min(index, len(sources) - 1)] if sources else "a scan"
        if channel.size and channel.min() == channel.max():
            warnings.warn(f"{source}: every voxel is {float(channel.flat[0]):g}; the preprocessed image will be "
                          "constant (check the export)", stacklevel=4)
