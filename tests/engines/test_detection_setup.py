"""prepare_detection_data refuses a patch the network cannot take, before it preprocesses anything."""

import pytest

from shared.engines.detection_setup import prepare_detection_data
from shared.io.errors import InputError


@pytest.mark.parametrize(("network_stride", "stride_named"), [(None, 8), (16, 16)])
def test_patch_not_divisible_by_the_total_stride_is_refused_before_preprocessing(tmp_path, network_stride,
                                                                                   stride_named):
    # 24 is a multiple of the coarsest detection stride (8) but not of an encoder stride of 16
    patch = [24, 24, 24] if network_stride else [36, 36, 36]
    with pytest.raises(InputError, match=f"not divisible by the network's total stride {stride_named}"):
        prepare_detection_data(tmp_path / "missing.json", tmp_path / "cache", tmp_path / "out", in_channels=1,
                               num_classes=1, patch_size=patch, detection_strides=[4, 8],
                               network_stride=network_stride)
    assert not (tmp_path / "cache").exists()
