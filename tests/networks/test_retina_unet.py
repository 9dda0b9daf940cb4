import pytest
import torch

from shared.networks.retina_unet import RetinaUNetNetwork
from shared.encoders import build_encoder

TINY = {"name": "resenc", "preset": "tiny"}


def _network(**overrides):
    arguments = dict(encoder=TINY, decoder_channels=16, detection_strides=(2, 4, 8), num_anchors=3)
    arguments.update(overrides)
    return RetinaUNetNetwork(1, 2, **arguments)


@pytest.mark.parametrize(
    "encoder, size, strides",
    [({"name": "plain", "preset": "tiny"}, 32, (2, 4, 8)), (TINY, 32, (4, 8)), ({"name": "resenc", "preset": "small"}, 64, (4, 8, 16))],
)
def test_output_contract_shapes(encoder, size, strides):
    network = RetinaUNetNetwork(1, 2, encoder=encoder, decoder_channels=16, detection_strides=strides, num_anchors=5)
    with torch.no_grad():
        outputs = network(torch.randn(2, 1, size, size, size))
    assert set(outputs) == {"cls_logits", "box_regression", "seg_logits"}
    for stride, cls, box in zip(strides, outputs["cls_logits"], outputs["box_regression"], strict=True):
        side = size // stride
        assert cls.shape == (2, 5 * 2, side, side, side)
        assert box.shape == (2, 5 * 6, side, side, side)
    assert outputs["seg_logits"].shape == (2, 2, size, size, size)  # foreground / background


def test_contract_attributes():
    network = _network()
    assert network.detection_strides == (2, 4, 8) and network.num_anchors == 3 and network.num_classes == 2
    assert network.encoder_prefix == "encoder." and network.encoder.stem_keys == ("stem.",)
    assert [level["stride"] for level in network.encoder.feature_info] == [1, 2, 4, 8]
    state = network.state_dict()
    assert any(key.startswith("encoder.stem.") for key in state)


def test_heads_start_at_the_prior_and_are_shared_across_levels():
    network = _network()
    with torch.no_grad():
        outputs = network(torch.randn(1, 1, 32, 32, 32))
    probabilities = torch.cat([torch.sigmoid(c).flatten() for c in outputs["cls_logits"]])
    assert abs(probabilities.mean().item() - 0.01) < 0.002
    assert len([m for m in network.modules() if type(m).__name__ == "DenseHead"]) == 2


def test_without_segmentation_there_is_no_seg_output_and_no_fine_decoder_levels():
    network = _network(segmentation=False, detection_strides=(4, 8))
    outputs = network(torch.randn(1, 1, 16, 16, 16))
    assert "seg_logits" not in outputs and not hasattr(network, "segmentation_head")
    assert sorted(network.decoder.lateral) == ["P2", "P3"]


@pytest.mark.parametrize("encoder", [{"name": "plain", "preset": "tiny"}, {**TINY, "zero_init_residual": False}])
def test_gradients_reach_every_parameter(encoder):
    network = _network(encoder=encoder)
    outputs = network(torch.randn(2, 1, 16, 16, 16))
    tensors = [*outputs["cls_logits"], *outputs["box_regression"], outputs["seg_logits"]]
    sum((t * torch.randn_like(t)).sum() for t in tensors).backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "name, target",
    [("plain", 19.0e6), ("resenc", 95.2e6)],
)
@pytest.mark.parametrize("num_classes", [1, 2])
def test_paper_parameter_counts(name, target, num_classes):
    with torch.device("meta"):
        network = RetinaUNetNetwork(1, num_classes, encoder={"name": name, "preset": "paper"})
    count = sum(p.numel() for p in network.parameters())
    assert abs(count / target - 1) < 0.05, count


def test_pretrained_nnssl_encoder_loads_into_the_detector():
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    reference = unet.ResidualEncoderUNet(
        1, 4, [8, 16, 32, 32], torch.nn.Conv3d, 3, [1, 2, 2, 2], 1, 1, 1, True, torch.nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True},
    )
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    network = _network()
    prefix = network.encoder_prefix
    network.encoder.load_state_dict(
        {k[len(prefix):]: v for k, v in reference.state_dict().items() if k.startswith(prefix)}, strict=True
    )
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        for mine, theirs in zip(network.encoder(x), reference.encoder(x), strict=True):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="detection stride 16 is not an encoder stride"):
        _network(detection_strides=(4, 16))
    with pytest.raises(ValueError, match="built for 1 input channel"):
        _network()(torch.randn(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="divisible by its coarsest stride 8"):
        _network()(torch.randn(1, 1, 16, 16, 20))
    with pytest.raises(ValueError, match="in_channels=1"):
        RetinaUNetNetwork(1, 1, encoder=build_encoder(TINY, 2))
    with pytest.raises(ValueError, match="first stride is 1"):
        _network(encoder={**TINY, "strides": [2, 2, 2, 2]}, detection_strides=(4, 8))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "resenc"])
def test_paper_networks_run_at_64_cubed(name):
    network = RetinaUNetNetwork(1, 1, encoder={"name": name, "preset": "paper"})
    with torch.no_grad():
        outputs = network(torch.randn(1, 1, 64, 64, 64))
    assert [c.shape[1:] for c in outputs["cls_logits"]] == [(27, 64 // s, 64 // s, 64 // s) for s in (4, 8, 16, 32)]
    assert [b.shape[1] for b in outputs["box_regression"]] == [162] * 4
    assert outputs["seg_logits"].shape == (1, 2, 64, 64, 64)


def test_segmentation_head_is_foreground_background_by_default_and_per_class_on_request():
    images = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert _network()(images)["seg_logits"].shape[1] == 2
        assert _network(segmentation_classes="classes")(images)["seg_logits"].shape[1] == 3
    with pytest.raises(ValueError, match="segmentation_classes"):
        _network(segmentation_classes="binary")


def test_detections_do_not_depend_on_the_segmentation_head():
    from shared.detectors.retina_unet import RetinaUNetDetector

    torch.manual_seed(0)
    foreground = _network().eval()
    per_class = _network(segmentation_classes="classes").eval()
    shared_weights = {k: v for k, v in foreground.state_dict().items() if not k.startswith("segmentation_head.")}
    per_class.load_state_dict(shared_weights, strict=False)
    images = torch.randn(1, 1, 32, 32, 32)
    anchors = [[4.0, 6.0, 8.0], [6.0], [6.0]]  # 3 · 1 · 1 = the network's 3 anchors per position
    first = RetinaUNetDetector(foreground, anchor_sizes=anchors, score_threshold=0.0).eval().predict(images)[0]
    second = RetinaUNetDetector(per_class, anchor_sizes=anchors, score_threshold=0.0).eval().predict(images)[0]
    assert len(first["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(first[key], second[key])


# 0.8 × 0.8 × 2.5 mm planned nnDetection-style: z joins the pooling one stage late, with 1-voxel kernels before.
ANISOTROPIC = {"name": "plain", "features": [4, 8, 8, 8], "strides": [1, [2, 2, 1], 2, 2],
               "kernel_sizes": [[3, 3, 1], 3, 3, 3], "convs_per_stage": 1}


def test_anisotropic_encoder_forward_and_loss():
    from shared.detectors.retina_unet import RetinaUNetDetector

    torch.manual_seed(0)
    network = _network(encoder=ANISOTROPIC, detection_strides=(4, 8))
    assert network.detection_strides == ((4, 4, 2), (8, 8, 4))
    images = torch.randn(2, 1, 16, 16, 8)
    outputs = network(images)
    sizes = [tuple(n // s for n, s in zip(images.shape[2:], stride)) for stride in network.detection_strides]
    assert sizes == [(4, 4, 4), (2, 2, 2)]
    assert [tuple(c.shape) for c in outputs["cls_logits"]] == [(2, 3 * 2, *size) for size in sizes]
    assert [tuple(b.shape) for b in outputs["box_regression"]] == [(2, 3 * 6, *size) for size in sizes]
    assert outputs["seg_logits"].shape[2:] == images.shape[2:]
    detector = RetinaUNetDetector(network, anchor_sizes=[[4.0], [4.0], [1.0, 2.0, 3.0]]).train()  # 3 anchors
    seg = torch.zeros(2, 1, 16, 16, 8, dtype=torch.long)
    seg[0, 0, 2:8, 3:9, 1:4] = 1
    targets = {"boxes": [torch.tensor([[2.0, 3.0, 1.0, 8.0, 9.0, 4.0]]), torch.zeros(0, 6)],
               "labels": [torch.zeros(1, dtype=torch.long), torch.zeros(0, dtype=torch.long)], "seg": seg}
    losses = detector(images, targets)
    assert torch.isfinite(losses["loss"]) and losses["box_l1"] > 0
    losses["loss"].backward()
    assert network.encoder.stages[0][0].convs[0].conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"coarsest stride \(8, 8, 4\)"):
        network(torch.randn(1, 1, 16, 16, 6))
