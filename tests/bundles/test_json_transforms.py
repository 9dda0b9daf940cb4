"""Transforms are JSON nodes: an override file adds one to training and one to preprocessing, with no
Python edited, and each shows its effect; the changed preprocessing writes a new cache folder.

The override files extend the bundle's lists with MONAI's ``+`` merge key (``"+intensity_transforms"``,
``"+preprocessing_transforms"``), the way a user would. Sizes: the tiny preset, 32³ patches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from shared.data.cache import DESCRIPTION_FILE, read_case
from shared.data.synthetic.dataset import make_dataset
from tests.bundles.test_detector_bundles import PLAIN, TRAIN, _bundle, _configs, _tiny

NOISE_STD = 0.5
NOISE = {"+intensity_transforms": [{"_target_": "monai.transforms.RandGaussianNoised", "keys": "image", "prob": 1.0,
                                    "std": NOISE_STD, "sample_std": False}]}
# a second CT window after the plan's normalisation: z-scores in [-1, 1] mapped to [0, 1], the rest clipped
WINDOW = {"+preprocessing_transforms": [{"_target_": "monai.transforms.ScaleIntensityRanged", "keys": "image",
                                         "a_min": -1.0, "a_max": 1.0, "b_min": 0.0, "b_max": 1.0, "clip": True}]}
SIZES = {"encoder": {"name": "plain", "preset": "tiny"}, "decoder_channels": 16, "detection_strides": [4, 8],
         "patch_size": [32, 32, 32], "batch_size": 2}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("json_transforms")
    counts = {"training": 3, "validation": 1, "test": 0, "unlabelled": 0}
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    for name, content in (("noise.json", NOISE), ("window.json", WINDOW)):
        (root / name).write_text(json.dumps(content, indent=4) + "\n")
    return root


def _parser(root: Path, *overrides: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([PLAIN / "train.json", PLAIN / "quick.json", *(root / name for name in overrides)])
    parser.update({"dataset_dir": str(root / "data"), "output_dir": str(root / "out"), **SIZES})
    return parser


def test_an_added_training_transform_changes_the_samples_but_not_the_cache(dataset):
    plain, noisy = _parser(dataset), _parser(dataset, "noise.json")
    assert noisy.get_parsed_content("data").cache_dir == plain.get_parsed_content("data").cache_dir
    plain_samples, noisy_samples = plain.get_parsed_content("train#dataset"), noisy.get_parsed_content("train#dataset")
    differences = []
    for index in range(4):
        before, after = plain_samples[index], noisy_samples[index]
        # the same patch (the added transform draws after the others) ...
        assert before["case"] == after["case"] and torch.equal(before["seg"], after["seg"])
        assert torch.equal(before["boxes"], after["boxes"])
        differences.append((after["image"] - before["image"]).flatten())
    # ... with Gaussian noise of the configured strength on top
    assert torch.cat(differences).std().item() == pytest.approx(NOISE_STD, rel=0.05)


def test_an_added_preprocessing_transform_writes_a_new_cache_folder(dataset):
    plain = _parser(dataset).get_parsed_content("data")
    windowed = _parser(dataset, "window.json").get_parsed_content("data")
    assert Path(windowed.cache_dir).parent == Path(plain.cache_dir).parent
    assert windowed.cache_dir != plain.cache_dir and windowed.cache_key != plain.cache_key
    case = plain.train_cases[0]
    before, after = read_case(plain.cache_dir, case).image, read_case(windowed.cache_dir, case).image
    assert before.min() < -1.0 and before.max() > 1.0  # z-scores, untouched by the new run
    assert after.min() == 0.0 and after.max() == 1.0
    np.testing.assert_allclose(after, np.clip((before + 1.0) / 2.0, 0.0, 1.0), atol=1e-6)
    described = json.loads((Path(windowed.cache_dir) / DESCRIPTION_FILE).read_text())
    assert described["key"] == windowed.cache_key and "ScaleIntensityRange" in json.dumps(described)
    # the same chain again reuses its folder
    assert _parser(dataset, "window.json").get_parsed_content("data").cache_dir == windowed.cache_dir


def test_the_bundle_trains_with_both_override_files(dataset):
    common = ["--dataset_dir", str(dataset / "data"), "--output_dir", str(dataset / "run"), *_tiny("plain")]
    _bundle("run", "--config_file", _configs(PLAIN, "train.json", "quick.json") [:-1] + f",'{dataset / 'noise.json'}',"
            f"'{dataset / 'window.json'}']", *common, *TRAIN, cwd=dataset)
    plan = json.loads((dataset / "run" / "model_plan.json").read_text())
    folder = dataset / "run" / "cache" / plan["cache_key"]
    assert read_case(folder, "lung_ct_tr_000").image.max() <= 1.0
    assert (dataset / "run" / "model.pt").is_file()
