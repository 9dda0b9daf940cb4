"""Intensity normalisation from the plan, as a dictionary transform over :mod:`shared.data.normalize`
(the one place it is done: CT clipped and z-scored with the data set's foreground statistics, other
modalities z-scored per image). MONAI's ``NormalizeIntensityd``/``ScaleIntensityRanged`` can each do
one of the two; the plan's channel list says which applies to which channel.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from shared.data.normalize import normalize_image
from shared.io.errors import InputError


class NormalizeChannelsd(MapTransform):
    """Normalise each channel of a (C, X, Y, Z) scan as its plan spec says → float32.

    Args:
        keys: the image key(s).
        channels: the plan's ``channels``: one ``{"modality", "clip", "mean", "std"}`` per channel
            (optionally ``"per_image": true``), see :func:`shared.data.normalize.normalize_image`.
    """

    def __init__(self, keys: KeysCollection = "image", channels: Sequence[dict[str, Any]] = (), *,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if not channels:
            raise ValueError("channels must list one normalisation spec per image channel (the plan's 'channels')")
        self.channels = [dict(spec) for spec in channels]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        data = dict(data)
        for key in self.key_iterator(data):
            array = np.asarray(data[key], dtype=np.float32)
            if array.ndim != 4 or array.shape[0] != len(self.channels):
                source = (data.get("sources") or [None])[0]
                raise InputError(source, f"the model expects {len(self.channels)} channel(s), the scan has "
                                         f"{array.shape[0] if array.ndim == 4 else 'no channel axis'}")
            data[key] = normalize_image(array, self.channels)
        return data
