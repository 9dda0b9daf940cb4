import pytest

from shared.encoders import ENCODER_PRESETS
from shared.encoders.planning import plan_strides_and_kernels


def test_isotropic_spacing_gives_the_presets_strides_and_kernels():
    strides, kernels = plan_strides_and_kernels([1.0, 1.0, 1.0], [128, 128, 128], 6)
    assert strides == ENCODER_PRESETS["resenc"]["paper"]["strides"] == [1, 2, 2, 2, 2, 2]
    assert kernels == [3] * 6


def test_thick_slices_join_the_pooling_one_stage_late():
    # 0.8 × 0.8 × 2.5 mm: 2.5 / 0.8 ≥ 2, so z is neither pooled nor convolved at first;
    # after one in-plane pooling 2.5 / 1.6 < 2 and z joins (by hand, nnU-Net's rules)
    strides, kernels = plan_strides_and_kernels([0.8, 0.8, 2.5], [128, 128, 64], 6)
    assert strides == [1, (2, 2, 1), 2, 2, 2, 2]
    assert kernels == [(3, 3, 1), 3, 3, 3, 3, 3]


def test_very_thick_slices_wait_two_stages():
    # 0.7 × 0.7 × 5 mm: ratios 7.1, 3.6, then 1.8 → z pooled from the third pooling on
    strides, kernels = plan_strides_and_kernels([0.7, 0.7, 5.0], [128, 128, 32], 6)
    assert strides == [1, (2, 2, 1), (2, 2, 1), 2, 2, 2]
    assert kernels == [(3, 3, 1), (3, 3, 1), 3, 3, 3, 3]


def test_a_short_axis_stops_pooling_at_eight_voxels():
    # 1 mm isotropic, patch 64 × 64 × 16: z goes 16 → 8 → 4 and then stays
    strides, kernels = plan_strides_and_kernels([1.0, 1.0, 1.0], [64, 64, 16], 5)
    assert strides == [1, 2, 2, (2, 2, 1), (2, 2, 1)]
    assert kernels == [3] * 5


def test_a_patch_too_small_for_the_stages_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"patch_size \[32, 32, 32\] at spacing \[1.0, 1.0, 1.0\] allows only 3 "
                                         r"poolings but the encoder has 6 stages"):
        plan_strides_and_kernels([1.0, 1.0, 1.0], [32, 32, 32], 6)


def test_spacing_variants_pool_a_subset_of_the_axes_at_every_stage():
    from shared.encoders.planning import is_spacing_variant

    assert is_spacing_variant([1, 2, 2, 2], [1, [2, 2, 1], 2, 2])
    assert is_spacing_variant([1, [2, 2, 1], [2, 2, 1], 2], [1, 2, 2, 2])  # either direction
    assert not is_spacing_variant([1, 2, 2, 2], [1, 1, 2, 2])  # a stage that no longer pools
    assert not is_spacing_variant([1, 2, 2, 2], [1, 2, 2])  # another number of stages
    assert not is_spacing_variant([1, 2, 2], [1, [4, 4, 1], 2])  # another factor
