import pytest
import torch

from shared.networks.deformable_detr import DeformableDETRNetwork

# three levels of a two-stage-stride encoder: a 16³ patch gives 8³ + 4³ + 2³ = 584 tokens
TINY_ENCODER = {"name": "plain", "features": [8, 16, 16], "strides": [2, 2, 2], "convs_per_stage": 1}
TINY = dict(encoder=TINY_ENCODER, num_levels=3, num_queries=6, hidden_channels=32, num_heads=4, num_points=2,
            encoder_layers=1, decoder_layers=3, feedforward_channels=64, mapper_groups=8)


def _network(**overrides):
    torch.manual_seed(0)
    return DeformableDETRNetwork(1, 2, **{**TINY, **overrides})


def test_output_shapes_and_two_stage_top_k():
    network = _network()
    outputs = network(torch.randn(2, 1, 16, 16, 16))
    tokens = 8**3 + 4**3 + 2**3
    assert outputs["proposal_logits"].shape == (2, tokens, 2) and outputs["proposal_boxes"].shape == (2, tokens, 6)
    assert len(outputs["class_logits"]) == len(outputs["boxes"]) == len(outputs["reference_boxes"]) == 3
    for logits, boxes in zip(outputs["class_logits"], outputs["boxes"]):
        assert logits.shape == (2, 6, 2) and boxes.shape == (2, 6, 6)
        assert ((boxes > 0) & (boxes < 1)).all()
    # the first references are the proposals with the highest class logit, in order of score
    scores = outputs["proposal_logits"].amax(-1)
    chosen = scores.topk(6, dim=1).indices
    expected = outputs["proposal_boxes"].gather(1, chosen[..., None].expand(-1, -1, 6))
    torch.testing.assert_close(outputs["reference_boxes"][0], expected.detach())


def test_untrained_proposals_are_the_grid_boxes():
    """The proposal box head starts at zero, so each token proposes a box at its centre of side 0.05·2^l."""
    network = _network()
    outputs = network(torch.randn(1, 1, 16, 16, 16))
    first = outputs["proposal_boxes"][0, 0]
    torch.testing.assert_close(first, torch.tensor([0.5 / 8, 0.5 / 8, 0.5 / 8, 0.05, 0.05, 0.05]), atol=1e-5, rtol=0)
    last = outputs["proposal_boxes"][0, -1]  # the coarsest level's last voxel
    torch.testing.assert_close(last, torch.tensor([0.75, 0.75, 0.75, 0.2, 0.2, 0.2]), atol=1e-5, rtol=0)


def test_box_refinement_detaches_the_references():
    network = _network()
    for head in network.transformer_decoder.box_heads:  # untrained last layers are zero: give them weights
        torch.nn.init.normal_(head.layers[-1].weight, std=0.1)
    outputs = network(torch.randn(1, 1, 16, 16, 16))
    for layer, reference in enumerate(outputs["reference_boxes"]):
        assert not reference.requires_grad
        if layer:
            torch.testing.assert_close(reference, outputs["boxes"][layer - 1].detach())
    outputs["boxes"][-1].sum().backward()
    heads = network.transformer_decoder.box_heads
    assert heads[-1].layers[0].weight.grad.abs().sum() > 0
    for head in heads[:-1]:  # earlier box heads reach the last boxes only through references: detached
        assert head.layers[0].weight.grad is None or head.layers[0].weight.grad.abs().sum() == 0


def test_gradients_reach_every_parameter():
    network = _network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    images = torch.randn(2, 1, 16, 16, 16)

    def loss():  # means, so that one step does not saturate the sigmoids
        outputs = network(images)
        total = sum(boxes.mean() + logits.mean() for boxes, logits in zip(outputs["boxes"], outputs["class_logits"]))
        return total + outputs["proposal_boxes"].mean() + outputs["proposal_logits"].mean()

    loss().backward()
    optimizer.step()  # moves the zero-initialised layers (offsets, attention weights, last box layers)
    optimizer.zero_grad()
    loss().backward()
    missing = [name for name, p in network.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_dense_output_is_the_last_layer():
    network = _network()
    images = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        outputs = network(images)
        network.dense_output = True
        dense = network(images)
    assert dense.shape == (2, 2 + 6, 6)
    torch.testing.assert_close(dense[:, :2].transpose(1, 2), outputs["class_logits"][-1])
    torch.testing.assert_close(dense[:, 2:].transpose(1, 2), outputs["boxes"][-1])


def test_contract_attributes_and_errors():
    network = _network()
    assert network.detection_strides == (2, 4, 8) and network.num_classes == 2 and network.encoder_prefix == "encoder."
    with pytest.raises(ValueError, match="num_queries"):
        _network(num_queries=600)(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="num_levels"):
        _network(num_levels=4)
    with pytest.raises(ValueError, match="divisible"):
        _network()(torch.randn(1, 1, 12, 16, 16))


@pytest.mark.parametrize("encoder, millions", [("plain", 18.2), ("resenc", 94.4)])
def test_parameter_count_at_the_paper_configuration(encoder, millions):
    """The paper's appendix C: DefDETR ≈ 18.2 M, ResEnc-DefDETR ≈ 94.4 M parameters (built on the meta device)."""
    with torch.device("meta"):
        network = DeformableDETRNetwork(1, 1, encoder={"name": encoder, "preset": "paper"})
    total = sum(p.numel() for p in network.parameters())
    assert round(total / 1e6, 1) == millions
    transformer = total - sum(p.numel() for p in network.encoder.parameters())
    assert transformer == 4_150_193  # mapper, transformer, two-stage and heads: the same for both encoders
