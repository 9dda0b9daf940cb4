import json

import numpy as np
from monai.transforms import Compose, ScaleIntensityRanged

from shared.data.cache_key import cache_key, describe_transform, package_version
from shared.data.transforms_geometry import ResampleToSpacingd


def _chain(a_max=1.0, spacing=(1.0, 1.0, 1.0)):
    return Compose([ResampleToSpacingd(np.asarray(spacing)),
                    ScaleIntensityRanged("image", a_min=-1.0, a_max=a_max, b_min=0.0, b_max=1.0)])


def test_the_description_names_targets_and_arguments_as_json():
    described = describe_transform(_chain())
    text = json.dumps(described)  # JSON-able
    assert described["_target_"] == "monai.transforms.compose.Compose"
    assert "shared.data.transforms_geometry.ResampleToSpacingd" in text and '"pixdim": [1.0, 1.0, 1.0]' in text


def test_the_key_is_stable_and_changes_with_any_argument():
    key = cache_key(_chain())
    assert cache_key(_chain()) == key and package_version() != "unknown"
    assert cache_key(_chain(a_max=2.0)) != key and cache_key(_chain(spacing=(1.0, 1.0, 1.5))) != key
