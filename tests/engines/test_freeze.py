import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from shared.networks.retina_unet import RetinaUNetNetwork
from shared.engines.freeze import FreezePhase, frozen_parameter_names, set_trainable


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True), nn.LeakyReLU())
        self.head = nn.Conv3d(4, 1, 1)

    def forward(self, images):
        return self.head(self.encoder(images))


def snapshot(network):
    return {name: parameter.detach().clone() for name, parameter in network.named_parameters()}


def test_frozen_parameters_stay_bit_identical_during_the_freeze_phase_then_all_train():
    torch.manual_seed(0)
    network = Net()
    transferred = [f"encoder.{key}" for key in network.encoder.state_dict()]
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=3e-5)
    images, target = torch.randn(2, 1, 6, 6, 6), torch.randn(2, 1, 6, 6, 6)

    def step(engine, batch):
        optimizer.zero_grad()
        loss = ((network(images) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    engine = Engine(step)
    FreezePhase(network, transferred, freeze_iterations=3).attach(engine)
    states = {0: snapshot(network)}

    @engine.on(Events.ITERATION_COMPLETED)
    def remember(engine):
        states[engine.state.iteration] = snapshot(network)

    engine.run([0] * 6, max_epochs=1)

    for name in transferred:
        assert torch.equal(states[3][name], states[0][name]), name  # no decay, no momentum while frozen
    assert not torch.equal(states[3]["head.weight"], states[0]["head.weight"])
    for name, value in states[6].items():
        assert not torch.equal(value, states[3][name]), name  # after the phase everything moves
    assert all(parameter.requires_grad for parameter in network.parameters())


def test_call_with_iteration_numbers_and_report_like_objects():
    network = Net()

    class Report:
        transferred_keys = ["encoder.0.weight", "encoder.0.bias", "encoder.1.weight"]

    freeze = FreezePhase(network, frozen_parameter_names(network, Report(), "transferred"), freeze_iterations=2)
    network.encoder[0].weight.grad = torch.ones_like(network.encoder[0].weight)
    freeze(1)
    assert not network.encoder[0].weight.requires_grad and network.encoder[0].weight.grad is None
    assert network.encoder[1].bias.requires_grad and network.head.weight.requires_grad
    freeze(2)
    assert not network.encoder[1].weight.requires_grad
    freeze(3)
    assert all(parameter.requires_grad for parameter in network.parameters())
    assert set_trainable(network, Report.transferred_keys, False) == 3
    with pytest.raises(ValueError, match="freeze_iterations"):
        FreezePhase(network, [], -1)


def _retina_unet() -> RetinaUNetNetwork:
    return RetinaUNetNetwork(1, 2, encoder={"name": "resenc", "preset": "tiny"}, decoder_channels=16,
                             detection_strides=[4, 8])


def test_the_papers_freeze_holds_the_whole_encoder_a_random_stem_included():
    # nnDetection's phase 1 trains neck and heads only: a stem that was not transferred waits too
    network = _retina_unet()
    encoder = [name for name, _ in network.named_parameters() if name.startswith("encoder.")]
    transferred = [name for name in encoder if not name.startswith("encoder.stem.")]
    assert len(transferred) < len(encoder)
    assert frozen_parameter_names(network, transferred) == encoder
    assert frozen_parameter_names(network, transferred, "transferred") == transferred
    FreezePhase(network, frozen_parameter_names(network, transferred), freeze_iterations=2)(1)
    trainable = {name for name, parameter in network.named_parameters() if parameter.requires_grad}
    assert not trainable & set(encoder)
    assert any(name.startswith("decoder.") for name in trainable) and "segmentation_head.weight" in trainable
    assert any(name.startswith("classification_head.") for name in trainable)


def test_an_unknown_part_or_a_network_without_an_encoder_prefix_is_refused():
    with pytest.raises(ValueError, match="frozen: expected one of"):
        frozen_parameter_names(_retina_unet(), [], "decoder")
    with pytest.raises(ValueError, match="encoder_prefix"):
        frozen_parameter_names(Net(), [])
