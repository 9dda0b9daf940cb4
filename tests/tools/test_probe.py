"""The probes' shared reading of --spacing and --patch_size."""

import pytest

from shared.io.errors import InputError
from tools.benchmarks._probe import spacing_and_patch


def test_a_number_is_the_same_along_every_axis():
    assert spacing_and_patch(1.5, 48) == ([1.5, 1.5, 1.5], [48, 48, 48])
    assert spacing_and_patch("2", "32") == ([2.0, 2.0, 2.0], [32, 32, 32])


def test_per_axis_values_and_the_plans_keywords_pass_through():
    assert spacing_and_patch((0.8, 0.8, 2.5), (64, 64, 32)) == ([0.8, 0.8, 2.5], [64, 64, 32])
    assert spacing_and_patch("0.8,0.8,2.5", 32)[0] == [0.8, 0.8, 2.5]
    assert spacing_and_patch("median", 32)[0] == "median"
    assert spacing_and_patch("fixed", 32)[0] == "fixed"


def test_bad_values_are_named():
    with pytest.raises(InputError, match="spacing"):
        spacing_and_patch((1.0, 2.0), 32)
    with pytest.raises(ValueError, match="patch_size.*\\[32, 32\\]"):
        spacing_and_patch(1.0, [32, 32])
    with pytest.raises(ValueError, match="patch_size"):
        spacing_and_patch(1.0, 0)
