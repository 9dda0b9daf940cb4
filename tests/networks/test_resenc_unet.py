import pytest
import torch

from shared.networks import ResEncUNet

TINY = {"name": "resenc", "features": [8, 16, 32, 32], "strides": [1, 2, 2, 2], "blocks_per_stage": [1, 2, 1, 2]}


def _reference(in_channels, out_channels, spec, *, deep_supervision=False):
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    features, strides, blocks = spec["features"], spec["strides"], spec["blocks_per_stage"]
    return unet.ResidualEncoderUNet(
        in_channels, len(features), features, torch.nn.Conv3d, spec.get("kernel_sizes", 3), strides, blocks,
        out_channels, 1, True,
        torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True},
        deep_supervision=deep_supervision,
    )


def test_output_shape_and_no_duplicate_encoder_weights():
    network = ResEncUNet(2, 3, encoder_spec={"name": "resenc", "preset": "tiny"})
    assert network(torch.randn(1, 2, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    keys = list(network.state_dict())
    assert not any(key.startswith("decoder.encoder.") for key in keys)
    assert {key.split(".")[0] for key in keys} == {"encoder", "decoder"}


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_full_network_matches_dynamic_network_architectures(deep_supervision):
    reference = _reference(2, 3, TINY, deep_supervision=deep_supervision).double()
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    state = reference.state_dict()
    assert any(key.startswith("decoder.encoder.") for key in state)
    ours = ResEncUNet(2, 3, encoder_spec=TINY, deep_supervision=deep_supervision).double()
    # the DNA state dict as released (with its decoder.encoder.* copy and all_modules aliases) loads strictly
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 2, 16, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        mine, theirs = ours(x), reference(x)
    if not deep_supervision:
        mine, theirs = [mine], [theirs]
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_resenc_l_unet_parameter_count_matches_reference():
    with torch.device("meta"):
        ours = ResEncUNet(1, 1)
        reference = _reference(1, 1, {"features": [32, 64, 128, 256, 320, 320], "strides": [1, 2, 2, 2, 2, 2],
                                      "blocks_per_stage": [1, 3, 4, 6, 6, 6]})
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


def test_gradients_reach_every_used_parameter():
    network = ResEncUNet(1, 1, encoder_spec={**TINY, "zero_init_residual": False})
    output = network(torch.randn(1, 1, 16, 16, 16))
    (output * torch.randn_like(output)).sum().backward()
    for name, parameter in network.named_parameters():
        if name.startswith("decoder.seg_layers.") and not name.startswith("decoder.seg_layers.2."):
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_input_size_must_divide_by_the_coarsest_stride():
    network = ResEncUNet(1, 1, encoder_spec={"name": "resenc", "preset": "tiny"})
    with pytest.raises(ValueError, match=r"divisible by its coarsest stride 8, got \(16, 12, 16\).*\(16, 16, 16\)"):
        network(torch.randn(1, 1, 16, 12, 16))


ANISOTROPIC = {"name": "resenc", "features": [8, 16, 32], "strides": [1, [2, 2, 1], 2],
               "kernel_sizes": [[3, 3, 1], 3, 3], "blocks_per_stage": [1, 2, 1]}


def test_anisotropic_network_matches_dynamic_network_architectures():
    reference = _reference(1, 2, ANISOTROPIC, deep_supervision=True).double()
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    ours = ResEncUNet(1, 2, encoder_spec=ANISOTROPIC, deep_supervision=True).double()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert ours.decoder.transpconvs[1].weight.shape[2:] == (2, 2, 1)
    x = torch.randn(1, 1, 8, 8, 4, dtype=torch.float64)
    with torch.no_grad():
        mine, theirs = ours(x), reference(x)
    assert [tuple(m.shape[2:]) for m in mine] == [(8, 8, 4), (4, 4, 4)]
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_input_size_must_divide_by_the_coarsest_stride_per_axis():
    network = ResEncUNet(1, 1, encoder_spec=ANISOTROPIC)
    assert network(torch.randn(1, 1, 8, 8, 2)).shape == (1, 1, 8, 8, 2)  # multiples of (4, 4, 2)
    with pytest.raises(ValueError, match=r"coarsest stride \(4, 4, 2\), got \(8, 8, 3\).*\(8, 8, 4\)"):
        network(torch.randn(1, 1, 8, 8, 3))
