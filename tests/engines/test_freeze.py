import pytest
import torch
from ignite.engine import Events
from torch import nn

from shared.engines.freeze import FreezePhase, frozen_parameter_names
from shared.engines.trainer import LossDictTrainer, prepare_image_batch
from shared.networks.retina_unet import RetinaUNetNetwork


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True), nn.LeakyReLU())
        self.head = nn.Conv3d(4, 1, 1)

    def forward(self, images):
        return self.head(self.encoder(images))


def snapshot(network):
    return {name: parameter.detach().clone() for name, parameter in network.named_parameters()}


class Regression(nn.Module):
    """Net with its loss: a model as the trainer takes it."""

    def __init__(self):
        super().__init__()
        self.net = Net()
        self.encoder_prefix = "net.encoder."

    def forward(self, images):
        return {"loss": ((self.net(images) - images.flip(-1)) ** 2).mean()}


@pytest.mark.parametrize("optimizer_name", ["SGD", "AdamW"])
def test_frozen_parameters_stay_bit_identical_during_the_freeze_phase_then_all_train(optimizer_name):
    torch.manual_seed(0)
    model = Regression()
    frozen = frozen_parameter_names(model, [])
    if optimizer_name == "SGD":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=3e-5)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    batches = [{"image": torch.randn(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(i))} for i in range(6)]
    trainer = LossDictTrainer("cpu", 1, batches, model, optimizer, prepare_batch=prepare_image_batch,
                               gradient_clip=1.0, train_handlers=[FreezePhase(model, frozen, freeze_iterations=3)])
    states = {0: snapshot(model)}
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda engine: states.__setitem__(engine.state.iteration, snapshot(model)))
    trainer.run()

    assert frozen and all(name.startswith("net.encoder.") for name in frozen)
    for name in frozen:
        assert torch.equal(states[3][name], states[0][name]), name  # no decay, no momentum while frozen
    assert not torch.equal(states[3]["net.head.weight"], states[0]["net.head.weight"])
    for name, value in states[6].items():
        assert not torch.equal(value, states[3][name]), name  # after the phase everything moves
    assert all(parameter.requires_grad for parameter in model.parameters()), "DDP needs requires_grad kept"


def test_call_with_iteration_numbers_and_report_like_objects():
    network = Net()

    class Report:
        transferred_keys = ["encoder.0.weight", "encoder.0.bias", "encoder.1.weight"]

    freeze = FreezePhase(network, frozen_parameter_names(network, Report(), "transferred"), freeze_iterations=2)
    for parameter in network.parameters():
        parameter.grad = torch.ones_like(parameter)
    assert freeze(2) == 3
    assert network.encoder[0].weight.grad is None and network.encoder[1].weight.grad is None
    assert network.encoder[1].bias.grad is not None and network.head.weight.grad is not None
    network.encoder[0].weight.grad = torch.ones_like(network.encoder[0].weight)
    assert freeze(3) == 0 and network.encoder[0].weight.grad is not None
    assert all(parameter.requires_grad for parameter in network.parameters())
    with pytest.raises(ValueError, match="freeze_iterations"):
        FreezePhase(network, [], -1)
    with pytest.raises(ValueError, match="not parameters of the network.*'decoder.weight'"):
        FreezePhase(network, ["decoder.weight"], 1)


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
    for parameter in network.parameters():
        parameter.grad = torch.zeros_like(parameter)
    FreezePhase(network, frozen_parameter_names(network, transferred), freeze_iterations=2)(1)
    trainable = {name for name, parameter in network.named_parameters() if parameter.grad is not None}
    assert not trainable & set(encoder)
    assert any(name.startswith("decoder.") for name in trainable) and "segmentation_head.weight" in trainable
    assert any(name.startswith("classification_head.") for name in trainable)


def test_an_unknown_part_or_a_network_without_an_encoder_prefix_is_refused():
    with pytest.raises(ValueError, match="frozen: expected one of"):
        frozen_parameter_names(_retina_unet(), [], "decoder")
    with pytest.raises(ValueError, match="encoder_prefix"):
        frozen_parameter_names(Net(), [])
