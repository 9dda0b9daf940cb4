import pytest

from shared.layers.strides import compact, cumulative_strides, per_axis, per_stage_per_axis


def test_per_axis_broadcasts_an_int_and_checks_a_sequence():
    assert per_axis(2, 3, "strides") == (2, 2, 2)
    assert per_axis([2, 2, 1], 3, "strides") == (2, 2, 1)
    for bad in ([2, 2], [2, 0, 2], 1.5, True, "2"):
        with pytest.raises(ValueError, match="kernel: expected a positive integer or 3 positive integers"):
            per_axis(bad, 3, "kernel")


def test_compact_is_an_int_only_when_every_axis_agrees():
    assert compact((2, 2, 2)) == 2 and isinstance(compact((2, 2, 2)), int)
    assert compact([2, 2, 1]) == (2, 2, 1)


def test_per_stage_per_axis_mixes_scalars_and_lists_and_names_the_stage():
    assert per_stage_per_axis([1, [2, 2, 1], [2, 2, 2]], 3, 3, "strides") == [1, (2, 2, 1), 2]
    assert per_stage_per_axis(3, 2, 3, "kernel_sizes") == [3, 3]
    with pytest.raises(ValueError, match=r"strides\[2\]"):
        per_stage_per_axis([1, 2, [2, 1]], 3, 3, "strides")
    with pytest.raises(ValueError, match="strides has 2 entries"):
        per_stage_per_axis([1, 2], 3, 3, "strides")


def test_cumulative_strides_multiply_per_axis():
    assert cumulative_strides([1, [2, 2, 1], 2, [1, 1, 2]], 3) == [1, (2, 2, 1), (4, 4, 2), 4]
