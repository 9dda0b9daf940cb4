"""prepare_detection_data refuses a patch the network cannot take, before it preprocesses anything."""

import pytest

from shared.networks.retina_unet import RetinaUNetNetwork
from shared.data.plan import plan_dataset
from shared.data.transforms_chains import preprocessing_chain
from shared.detectors.planning import plan_retina_unet
from shared.engines.detection_setup import plan_encoder, prepare_detection_data, read_model_plan, trained_encoder
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
