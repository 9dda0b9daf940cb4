import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from shared.engines.warmup import WarmupFreeze, set_transferred_trainable


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True), nn.LeakyReLU())
        self.head = nn.Conv3d(4, 1, 1)

    def forward(self, images):
        return self.head(self.encoder(images))


def snapshot(network):
    return {name: parameter.detach().clone() for name, parameter in network.named_parameters()}


def test_transferred_parameters_stay_bit_identical_during_warmup_then_all_train():
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
    WarmupFreeze(network, transferred, warmup_iterations=3).attach(engine)
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

    freeze = WarmupFreeze(network, Report(), warmup_iterations=2)
    network.encoder[0].weight.grad = torch.ones_like(network.encoder[0].weight)
    freeze(1)
    assert not network.encoder[0].weight.requires_grad and network.encoder[0].weight.grad is None
    assert network.encoder[1].bias.requires_grad and network.head.weight.requires_grad
    freeze(2)
    assert not network.encoder[1].weight.requires_grad
    freeze(3)
    assert all(parameter.requires_grad for parameter in network.parameters())
    assert set_transferred_trainable(network, Report.transferred_keys, False) == 3
    with pytest.raises(ValueError, match="warmup_iterations"):
        WarmupFreeze(network, [], -1)
