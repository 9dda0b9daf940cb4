"""The Python default chains are the bundle JSON's chains, transform by transform, and their key is stable."""

from pathlib import Path

from monai.bundle import ConfigParser

from shared.data.cache_key import cache_key, describe_transform
from shared.data.transforms_chains import preprocessing_chain, training_chain

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "retina_unet_detection" / "configs"
PLAN = {"target_spacing": [1.0, 1.0, 1.5], "channels": [{"modality": "CT", "clip": [-1000.0, 400.0], "mean": -300.0,
                                                         "std": 200.0}]}


def _parser(*names):
    parser = ConfigParser()
    parser.read_config([CONFIGS / name for name in names])
    parser["plan"] = PLAN
    return parser


def test_the_bundle_chains_are_the_python_chains():
    parser = _parser("train.json")
    assert describe_transform(parser.get_parsed_content("preprocessing")) == describe_transform(preprocessing_chain(PLAN))
    expected = training_chain(parser["patch_size"], batch_size=parser["batch_size"],
                              foreground_fraction=parser["foreground_fraction"])
    assert describe_transform(parser.get_parsed_content("train#preprocessing")) == describe_transform(expected)
    quick = _parser("train.json", "quick.json")
    plain = training_chain(quick["patch_size"], batch_size=quick["batch_size"],
                           foreground_fraction=quick["foreground_fraction"], augment=False)
    assert describe_transform(quick.get_parsed_content("train#preprocessing")) == describe_transform(plain)


def test_the_key_follows_every_argument_of_the_chain():
    key = cache_key(preprocessing_chain(PLAN))
    assert cache_key(preprocessing_chain(PLAN)) == key and len(key) == 16
    moved = {**PLAN, "target_spacing": [1.0, 1.0, 2.0]}
    windowed = {**PLAN, "channels": [{**PLAN["channels"][0], "clip": [-1000.0, 500.0]}]}
    assert len({key, cache_key(preprocessing_chain(moved)), cache_key(preprocessing_chain(windowed))}) == 3
