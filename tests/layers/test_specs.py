import json

import pytest
from torch import nn

from shared.layers.specs import build_activation, build_norm, per_stage, split_spec


def test_per_stage_broadcasts_a_scalar_and_keeps_a_list():
    assert per_stage(3, 4, "kernel_sizes") == [3, 3, 3, 3]
    assert per_stage([1, 2, 2], 3, "strides") == [1, 2, 2]
    assert per_stage(None, 2, "x") == [None, None]


def test_per_stage_wrong_length_names_the_argument():
    with pytest.raises(ValueError, match="blocks_per_stage has 2 entries .* 3 stages"):
        per_stage([1, 2], 3, "blocks_per_stage")


def test_norm_spec_from_json_list_and_tuple_agree():
    spec = json.loads(json.dumps(("instance", {"affine": True})))
    assert isinstance(spec, list)
    norm = build_norm(spec, 8)
    assert isinstance(norm, nn.InstanceNorm3d) and norm.affine and norm.num_features == 8
    assert build_norm(None, 8) is None


def test_group_norm_channels_per_group_sets_the_group_count():
    norm = build_norm(("group", {"channels_per_group": 16}), 128)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 8 and norm.num_channels == 128
    with pytest.raises(ValueError, match="channels_per_group=16 does not divide 24"):
        build_norm(("group", {"channels_per_group": 16}), 24)


def test_activation_spec_and_bad_specs():
    act = build_activation(("leakyrelu", {"negative_slope": 0.01}))
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.01
    assert build_activation(None) is None
    assert split_spec("ReLU", "act") == ("relu", {})
    with pytest.raises(ValueError, match="act: expected"):
        split_spec(("relu", 1, 2), "act")
