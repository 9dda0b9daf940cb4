import pytest
import torch
from tests.checkpoints.checkpoint_cases import StandInDetector, dna_encoder, dna_unet

from shared.checkpoints.manifest import PretrainedEncoder
from shared.checkpoints.transfer import architecture_differences, transfer_encoder
from shared.io.errors import InputError

SPEC = {"name": "resenc", "preset": "tiny", "features": [4, 8, 16]}


def pretrained_from(encoder, stems=None, architecture=SPEC):
    return PretrainedEncoder(encoder.state_dict(), {"architecture": dict(architecture)}, stems or {}, source="enc.json")


def equal(first, second):
    return all(torch.equal(first[key], second[key]) for key in first)


def test_encoder_mode_loads_the_encoder_and_leaves_the_head():
    source = dna_encoder(1, seed=10)
    detector = StandInDetector(1)
    head_before = {key: value.clone() for key, value in detector.head.state_dict().items()}
    report = transfer_encoder(detector, pretrained_from(source), expected_architecture=SPEC)
    assert equal(source.state_dict(), detector.encoder.state_dict())
    assert equal(head_before, detector.head.state_dict())
    assert sorted(report.transferred_keys) == sorted("encoder." + key for key in source.state_dict())
    assert report.missing_keys == report.unexpected_keys == report.shape_mismatches == []
    assert report.stem_source == "main"
    assert report.new_parameters(detector) == ["head.weight", "head.bias"]
    images = torch.randn(1, 1, 8, 8, 8, dtype=torch.float64)
    source.eval(), detector.eval()
    torch.testing.assert_close(detector.encoder(images)[-1], source(images)[-1], rtol=0, atol=1e-12)


def test_missing_and_unexpected_keys_are_refused_unless_allowed():
    state = dna_encoder(1, seed=10).state_dict()
    del state["stages.2.blocks.1.conv2.norm.bias"]
    del state["stages.2.blocks.1.conv2.all_modules.1.bias"]  # DNA's alias of the same parameter
    state["stages.9.extra.weight"] = torch.ones(1)
    pretrained = PretrainedEncoder(state, {}, source="enc.json")
    with pytest.raises(InputError, match="unexpected stages.9.extra.weight; missing "
                                         "encoder.stages.2.blocks.1.conv2.all_modules.1.bias; missing "
                                         "encoder.stages.2.blocks.1.conv2.norm.bias") as raised:
        transfer_encoder(StandInDetector(1), pretrained)
    assert raised.value.source == "enc.json"
    detector = StandInDetector(1)
    before = detector.encoder.stages[2].blocks[1].conv2.norm.bias.clone()
    report = transfer_encoder(detector, pretrained, allow_missing=["encoder.stages.2.*", "stages.9.*"])
    assert report.missing_keys == ["encoder.stages.2.blocks.1.conv2.all_modules.1.bias",
                                   "encoder.stages.2.blocks.1.conv2.norm.bias"]
    assert report.unexpected_keys == ["stages.9.extra.weight"]
    assert torch.equal(detector.encoder.stages[2].blocks[1].conv2.norm.bias, before)
    assert "encoder.stages.2.blocks.1.conv2.norm.bias" in report.new_parameters(detector)


def test_shape_mismatch_is_listed():
    wide = dna_unet(1, features=[4, 8, 24]).encoder
    with pytest.raises(InputError, match=r"shape stages.2.blocks.0.conv1.conv.weight: checkpoint \(24, 8, 3, 3, 3\) "
                                         r"vs network \(16, 8, 3, 3, 3\)"):
        transfer_encoder(StandInDetector(1), pretrained_from(wide))


def test_architecture_mismatch_names_the_field():
    paper = {"name": "resenc", "preset": "paper", "features": [32, 64, 128, 256, 320, 320]}
    with pytest.raises(InputError, match=r"features: checkpoint .*; strides: checkpoint \[1, 2, 2, 2, 2, 2\], network"):
        transfer_encoder(StandInDetector(1), pretrained_from(dna_encoder(), architecture=paper),
                         expected_architecture=SPEC)
    tiny = {"name": "resenc", "preset": "tiny"}
    assert architecture_differences({**tiny, "blocks_per_stage": (1, 1, 1, 1)}, tiny) == []


def test_architecture_differences_compare_every_constructor_argument():
    paper = {"name": "resenc", "preset": "paper"}
    other = {"name": "resenc", "features": [16, 32, 64, 128, 256, 256], "strides": [1, 1, 2, 2, 2, 2],
             "blocks_per_stage": [1, 3, 4, 6, 6, 6]}
    assert architecture_differences(paper, other) == [
        "features: checkpoint [32, 64, 128, 256, 320, 320], network [16, 32, 64, 128, 256, 256]",
        "strides: checkpoint [1, 2, 2, 2, 2, 2], network [1, 1, 2, 2, 2, 2]",
    ]
    # the class defaults are the paper's sizes; a scalar broadcasts over the stages
    assert architecture_differences(paper, {"name": "resenc", "kernel_sizes": 3}) == []
    assert architecture_differences(paper, {"name": "resenc", "kernel_sizes": 5}) == [
        "kernel_sizes: checkpoint [3, 3, 3, 3, 3, 3], network [5, 5, 5, 5, 5, 5]"]
    assert "name: checkpoint 'resenc', network 'plain'" in architecture_differences(
        paper, {"name": "plain", "preset": "paper"})


def test_random_stem_keeps_the_fresh_stem():
    detector = StandInDetector(2)
    stem_before = {key: value.clone() for key, value in detector.encoder.stem.state_dict().items()}
    source = dna_encoder(1, seed=10)
    report = transfer_encoder(detector, pretrained_from(source), stem="random")
    assert equal(stem_before, detector.encoder.stem.state_dict())
    assert equal({k: v for k, v in source.state_dict().items() if k.startswith("stages.")},
                 detector.encoder.state_dict())
    assert report.skipped_keys == sorted(key for key in source.state_dict() if key.startswith("stem."))
    assert not any(key.startswith("encoder.stem.") for key in report.transferred_keys)
    new = report.new_parameters(detector)
    assert "encoder.stem.convs.0.conv.weight" in new and "head.weight" in new and len(new) == 2 + 4


def test_replicated_stem_responds_like_the_single_channel_stem():
    source = dna_encoder(1, seed=10)
    detector = StandInDetector(3)
    report = transfer_encoder(detector, pretrained_from(source), stem="replicate")
    weight = source.state_dict()["stem.convs.0.conv.weight"]
    torch.testing.assert_close(detector.encoder.stem.convs[0].conv.weight, weight.repeat(1, 3, 1, 1, 1) / 3)
    assert "encoder.stem.convs.0.conv.weight" in report.transferred_keys
    image = torch.randn(1, 1, 8, 8, 8, dtype=torch.float64)
    source.eval(), detector.eval()
    torch.testing.assert_close(detector.encoder(image.expand(1, 3, 8, 8, 8))[-1], source(image)[-1])
    with pytest.raises(InputError, match="single-channel stem; this one takes 2"):
        transfer_encoder(StandInDetector(3), pretrained_from(dna_encoder(2)), stem="replicate")


def test_matching_stem_takes_the_per_dataset_stem_with_the_right_channels():
    source = dna_encoder(1, seed=10)
    mri_stem = dna_encoder(2, seed=11).stem.state_dict()
    detector = StandInDetector(2)
    report = transfer_encoder(detector, pretrained_from(source, stems={"ct": source.stem.state_dict(),
                                                                       "breast": mri_stem}))
    assert report.stem_source == "breast" and equal(mri_stem, detector.encoder.stem.state_dict())
    assert report.new_parameters(detector) == ["head.weight", "head.bias"]
    with pytest.raises(InputError, match=r"no pre-trained stem takes 3 input channel\(s\).*main \(1\), ct \(1\)"):
        transfer_encoder(StandInDetector(3), pretrained_from(source, stems={"ct": source.stem.state_dict()}))


def test_all_mode_loads_the_whole_network():
    trained, fresh = dna_unet(1, seed=0), dna_unet(1, seed=5)
    pretrained = PretrainedEncoder(trained.state_dict(), {}, source="full.pt", scope="network")
    report = transfer_encoder(fresh, pretrained, mode="all")
    assert equal(trained.state_dict(), fresh.state_dict())
    assert report.new_parameters(fresh) == [] and len(report.transferred_keys) == len(trained.state_dict())
    partial = {key: value for key, value in trained.state_dict().items() if not key.startswith("decoder.seg_layers")}
    with pytest.raises(InputError, match="missing decoder.seg_layers.0.bias; missing decoder.seg_layers.0.weight"):
        transfer_encoder(dna_unet(1), PretrainedEncoder(partial, {}, scope="network"), mode="all")


def test_network_without_alias_keys_skips_them():
    detector = StandInDetector(1)
    for module in detector.encoder.modules():
        if hasattr(module, "all_modules"):
            del module.all_modules  # our encoder registers conv/norm once, without DNA's alias
    source = dna_encoder(1, seed=10)
    report = transfer_encoder(detector, pretrained_from(source))
    assert report.skipped_keys and all(".all_modules." in key for key in report.skipped_keys)
    assert equal(detector.encoder.state_dict(), source.state_dict())


def test_checkpoint_without_stem_needs_random_stem():
    stageless = {k: v for k, v in dna_encoder(1, seed=10).state_dict().items() if not k.startswith("stem.")}
    pretrained = PretrainedEncoder(stageless, {}, source="enc.json")
    with pytest.raises(InputError, match="no stem weights.*stem='random'"):
        transfer_encoder(StandInDetector(1), pretrained)
    assert transfer_encoder(StandInDetector(1), pretrained, stem="random").stem_source is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        transfer_encoder(StandInDetector(1), pretrained_from(dna_encoder()), mode="decoder")
    with pytest.raises(ValueError, match="stem"):
        transfer_encoder(StandInDetector(1), pretrained_from(dna_encoder()), stem="copy")


def test_mae_pretraining_to_detector_end_to_end(tmp_path):
    from shared.checkpoints.loading import load_pretrained
    from shared.checkpoints.manifest import export_encoder
    from shared.ssl.mae import MaskedAutoencoder

    model = MaskedAutoencoder(dna_unet(1), block_size=4, mask_ratio=0.75, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(2, 1, 16, 16, 16, dtype=torch.float64))["loss"].backward()
        optimizer.step()
    export_encoder(model, tmp_path, architecture=SPEC, in_channels=1, modality="CT", spacing=[1, 1, 1],
                   normalization="ct", method="mae", method_settings={"mask_ratio": 0.75, "block_size": 4})
    detector = StandInDetector(1)
    report = transfer_encoder(detector, load_pretrained(tmp_path), expected_architecture=SPEC)
    assert equal(model.network.encoder.state_dict(), detector.encoder.state_dict())
    assert report.new_parameters(detector) == ["head.weight", "head.bias"]
