"""prepare_detection_data refuses a patch the network cannot take, before it preprocesses anything; the model
plan records the training's image preprocessing and inference refuses a chain that differs."""

import json

import pytest

from shared.networks.retina_unet import RetinaUNetNetwork
from shared.data.plan import plan_dataset
from shared.data.transforms_chains import preprocessing_chain
from shared.detectors.planning import plan_retina_unet
from shared.engines.detection_setup import (check_inference_preprocessing, plan_encoder, prepare_detection_data,
                                            read_model_plan, trained_encoder)
from shared.io.errors import InputError
from tests._cases import spaced_affine, write_dataset

ISOTROPIC = {"name": "plain", "preset": "tiny"}


@pytest.mark.parametrize(("network_stride", "stride_named"), [(None, 8), (16, 16)])
def test_patch_not_divisible_by_the_total_stride_is_refused_before_preprocessing(tmp_path, network_stride,
                                                                                   stride_named):
    # 24 is a multiple of the coarsest detection stride (8) but not of an encoder stride of 16
    patch = [24, 24, 24] if network_stride else [36, 36, 36]
    with pytest.raises(InputError, match=f"not divisible by the network's total stride {stride_named}"):
        prepare_detection_data(tmp_path / "missing.json", tmp_path / "cache", tmp_path / "out", in_channels=1,
                               preprocessing=None, plan={}, num_classes=1, patch_size=patch, detection_strides=[4, 8],
                               network_stride=network_stride)
    assert not (tmp_path / "cache").exists()


def test_the_patch_check_is_per_axis_on_an_anisotropic_network(tmp_path):
    # total stride (8, 8, 4): a 16-voxel z fits, a 32 × 32 × 12 patch does not (12 % 8 would, too, under a max)
    with pytest.raises(InputError, match=r"total stride \[8, 8, 4\]: choose multiples of \[8, 8, 4\]"):
        prepare_detection_data(tmp_path / "missing.json", tmp_path / "cache", tmp_path / "out", in_channels=1,
                               preprocessing=None, plan={}, num_classes=1, patch_size=[32, 32, 6], detection_strides=[[4, 4, 2], [8, 8, 4]],
                               network_stride=(8, 8, 4))
    assert not (tmp_path / "cache").exists()


def test_fixed_spacing_leaves_the_encoder_as_it_is(tmp_path):
    encoder = {"name": "plain", "preset": "tiny"}
    assert plan_encoder(encoder, datalist=tmp_path / "missing.json", cache_dir=tmp_path / "cache", spacing="fixed",
                        patch_size=[32, 32, 32]) is encoder
    assert not (tmp_path / "cache").exists()


def test_median_spacing_plans_per_axis_strides_recorded_for_inference(tmp_path, rng):
    # thick slices (0.8 × 0.8 × 2.5 mm): by hand (shared.encoders.planning) on a 32 × 32 × 16 patch
    datalist = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1,
                             affine=spaced_affine(spacing=(0.8, 0.8, 2.5)))
    cache, out = tmp_path / "cache", tmp_path / "out"
    arguments = dict(datalist=datalist, cache_dir=cache, spacing="median", patch_size=[32, 32, 16])
    encoder = plan_encoder({"name": "plain", "preset": "tiny"}, **arguments)
    assert encoder == {"name": "plain", "preset": "tiny", "strides": [1, [2, 2, 1], 2, 2],
                       "kernel_sizes": [[3, 3, 1], 3, 3, 3]}
    network = RetinaUNetNetwork(1, 2, encoder=encoder, decoder_channels=16, detection_strides=[4, 8], num_anchors=27)
    assert network.detection_strides == ((4, 4, 2), (8, 8, 4))
    plan = plan_dataset(datalist, cache, spacing="median")
    chain = dict(preprocessing=preprocessing_chain(plan), plan=plan, plan_detector=plan_retina_unet)
    data = prepare_detection_data(datalist, cache, out, **chain, in_channels=1, num_classes=2,
                                  patch_size=[32, 32, 16], detection_strides=network.detection_strides,
                                  network_stride=network.encoder.feature_info[-1]["stride"], encoder=encoder)
    plan = read_model_plan(out)
    assert plan["encoder"] == encoder and plan["detection_strides"] == [[4, 4, 2], [8, 8, 4]]
    assert data.plan["target_spacing"] == pytest.approx([0.8, 0.8, 2.5])
    rebuilt = RetinaUNetNetwork(1, 2, encoder=plan["encoder"], decoder_channels=16, detection_strides=[4, 8])
    shapes = {k: v.shape for k, v in network.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    assert trained_encoder(out, ISOTROPIC) == encoder  # inference rebuilds the planned encoder
    assert trained_encoder(tmp_path / "untrained", ISOTROPIC) == ISOTROPIC
    prepare_detection_data(datalist, cache, tmp_path / "without", **chain, in_channels=1, num_classes=2,
                           patch_size=[32, 32, 16], detection_strides=[4, 8])
    assert "encoder" not in read_model_plan(tmp_path / "without")  # plans of bundles not passing one: unchanged
    assert trained_encoder(tmp_path / "without", ISOTROPIC) == ISOTROPIC
    # an explicit choice in the spec wins over the plan
    explicit = plan_encoder({"name": "plain", "preset": "tiny", "kernel_sizes": 3}, **arguments)
    assert explicit["kernel_sizes"] == 3 and explicit["strides"] == [1, [2, 2, 1], 2, 2]
    with pytest.raises(InputError, match=r"patch_size \[16, 16, 8\] at spacing \[0.8, 0.8, 2.5\] allows only 2"):
        plan_encoder({"name": "plain", "preset": "tiny"}, **{**arguments, "patch_size": [16, 16, 8]})


def test_the_detector_bundles_plan_the_encoder_for_median_spacing_and_inference_rebuilds_it(tmp_path, rng):
    from pathlib import Path

    from monai.bundle import ConfigParser

    configs = Path(__file__).resolve().parents[2] / "bundles" / "retina_unet_detection" / "configs"
    dataset = tmp_path / "raw"
    write_dataset(dataset, rng=rng, training=2, validation=1, affine=spaced_affine(spacing=(0.8, 0.8, 2.5)))
    settings = {"dataset_dir": str(dataset), "output_dir": str(tmp_path / "out"), "spacing": "median",
                "patch_size": [32, 32, 16], "encoder": ISOTROPIC, "decoder_channels": 16, "detection_strides": [4, 8],
                "num_workers": 0}
    train = ConfigParser()
    train.read_config(str(configs / "train.json"))
    for key, value in settings.items():
        train[key] = value
    network = train.get_parsed_content("network_def")
    assert network.encoder.strides == [1, (2, 2, 1), (4, 4, 2), (8, 8, 4)]
    assert network.detection_strides == ((4, 4, 2), (8, 8, 4))
    train.get_parsed_content("data")  # writes model_plan.json
    inference = ConfigParser()
    inference.read_config(str(configs / "inference.json"))
    for key in ("output_dir", "encoder", "decoder_channels", "detection_strides"):
        inference[key] = settings[key]
    inference["model_dir"] = settings["output_dir"]  # the trained model, wherever inference.json looks by default
    rebuilt = inference.get_parsed_content("network_def")
    assert rebuilt.encoder.strides == network.encoder.strides
    shapes = {k: v.shape for k, v in network.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


# a second CT window after the plan's normalisation, as tests/bundles/test_json_transforms.py adds it
WINDOW = {"_target_": "monai.transforms.ScaleIntensityRanged", "keys": "image", "a_min": -1.0, "a_max": 1.0,
          "b_min": 0.0, "b_max": 1.0, "clip": True}


def test_the_model_plan_records_the_image_preprocessing_and_inference_refuses_another(tmp_path, rng):
    from monai.transforms import Compose, ScaleIntensityRanged

    datalist = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1)
    plan = plan_dataset(datalist, tmp_path / "cache", spacing="fixed")
    arguments = {key: value for key, value in WINDOW.items() if key != "_target_"}
    windowed = Compose([*preprocessing_chain(plan).transforms, ScaleIntensityRanged(**arguments)])
    prepare_detection_data(datalist, tmp_path / "cache", tmp_path / "out", preprocessing=windowed, plan=plan,
                           in_channels=1, num_classes=2, patch_size=[32, 32, 32], detection_strides=[4, 8])
    recorded = read_model_plan(tmp_path / "out")["image_preprocessing"]
    # the transforms acting on "image" only: the label map and box transforms are left out
    assert [entry["_target_"].rsplit(".", 1)[-1] for entry in recorded] == \
        ["LoadVolumed", "ResampleToSpacingd", "NormalizeChannelsd", "ScaleIntensityRanged"]
    assert recorded[1]["pixdim"] == plan["target_spacing"] and recorded[3]["scaler"]["a_max"] == 1.0

    check_inference_preprocessing(tmp_path / "out", Compose([*preprocessing_chain(plan).transforms,
                                                            ScaleIntensityRanged(**arguments)]))
    with pytest.raises(InputError, match=r"model_plan.json: .*training also ran ScaleIntensityRanged .*pass the "
                                         r"same override file"):
        check_inference_preprocessing(tmp_path / "out", preprocessing_chain(plan))
    other = ScaleIntensityRanged(**{**arguments, "a_max": 2.0})
    with pytest.raises(InputError, match=r"transform 4 .* ScaleIntensityRanged here but ScaleIntensityRanged in "
                                         r"training \(scaler.a_max differ\)"):
        check_inference_preprocessing(tmp_path / "out", Compose([*preprocessing_chain(plan).transforms, other]))
    # a model plan from before the record, or none at all: nothing to compare
    untracked = {key: value for key, value in read_model_plan(tmp_path / "out").items() if key != "image_preprocessing"}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model_plan.json").write_text(json.dumps(untracked))
    check_inference_preprocessing(tmp_path / "old", preprocessing_chain(plan))
    check_inference_preprocessing(tmp_path / "untrained", preprocessing_chain(plan))


def test_inference_json_refuses_a_model_trained_with_a_ct_window_override_unless_given_it(tmp_path, rng):
    from pathlib import Path

    from monai.bundle import ConfigParser

    configs = Path(__file__).resolve().parents[2] / "bundles" / "retina_unet_detection" / "configs"
    write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1)
    (tmp_path / "window.json").write_text(json.dumps({"+preprocessing_transforms": [WINDOW]}))
    settings = {"dataset_dir": str(tmp_path / "raw"), "output_dir": str(tmp_path / "out"), "patch_size": [32, 32, 32],
                "encoder": ISOTROPIC, "decoder_channels": 16, "detection_strides": [4, 8], "num_workers": 0}
    train = ConfigParser()
    train.read_config([configs / "train.json", tmp_path / "window.json"])
    train.update(settings)
    train.get_parsed_content("data")  # writes model_plan.json

    def initialize(*overrides):
        inference = ConfigParser()
        inference.read_config([configs / "inference.json", *overrides])
        inference.update({"dataset_dir": settings["dataset_dir"], "model_dir": settings["output_dir"],
                          "prediction_dir": str(tmp_path / "predictions")})
        # the run's first step, before the evaluator (a bare bundle folder without a model still initialises)
        assert inference["run"][0] == \
            "$shared.engines.detection_setup.check_inference_preprocessing(@model_dir, @preprocessing)"
        return inference.get_parsed_content("run#0")

    with pytest.raises(RuntimeError) as raised:  # MONAI wraps what an expression raises
        initialize()
    assert isinstance(raised.value.__cause__, InputError)
    assert "model_plan.json: the inference preprocessing differs from the training's: the training also ran " \
           "ScaleIntensityRanged" in str(raised.value.__cause__)
    initialize(tmp_path / "window.json")  # the same override: the same chain
