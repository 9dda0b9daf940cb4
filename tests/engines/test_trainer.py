import numpy as np
import pytest
import torch
from ignite.engine import Events
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shared.engines.sampler import ResumableBatchSampler
from shared.engines.trainer import Trainer, image_forward


class SeededNoise(Dataset):
    """Sample i is a function of i alone, like the project's patch datasets."""

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return {"image": torch.randn(2, 4, generator=generator)}


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, images):
        loss = ((self.layer(images) - images.flip(-1)) ** 2).mean()
        return {"loss": loss, "mse": loss.detach()}


def make_trainer(tmp_path, epochs, **kwargs):
    torch.manual_seed(0)
    model = Regressor()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=3e-5)
    loader = DataLoader(SeededNoise(), batch_sampler=ResumableBatchSampler(3))
    trainer = Trainer(model, optimizer, loader, output_dir=tmp_path, iterations_per_epoch=4, max_epochs=epochs,
                      base_lr=0.1, warmup_iterations=3, forward=image_forward, checkpoint_every=2,
                      progress=False, **kwargs)
    return trainer, model


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    straight, straight_model = make_trainer(tmp_path / "straight", epochs=3)
    straight.run()

    first, _ = make_trainer(tmp_path / "resumed", epochs=3)
    stop_at = 6  # mid-epoch, on a checkpoint
    first.engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: e.terminate() if e.state.iteration == stop_at else None)
    first.run()
    assert first.last_checkpoint().name.endswith(f"_{stop_at}.pt")

    second, resumed_model = make_trainer(tmp_path / "resumed", epochs=3)
    engine = second.run()
    assert engine.state.iteration == 12
    assert [path.name for path in (tmp_path / "resumed" / "checkpoints").iterdir()] == ["last_checkpoint_12.pt"]
    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_validation_saves_the_best_model_and_logs(tmp_path):
    scores = iter([0.2, 0.5, 0.3])
    trainer, model = make_trainer(tmp_path, epochs=3, validate=lambda m: {"AP_IoU_0.10_MaxDet_100": next(scores)})
    trainer.run()
    best = torch.load(tmp_path / "model.pt", weights_only=True)
    assert (tmp_path / "model_final.pt").exists()
    assert set(best) == set(model.state_dict())
    assert list((tmp_path / "logs").iterdir()), "TensorBoard logs are written"
    assert trainer.best_metric() == pytest.approx(0.5)


def test_validation_runs_every_n_epochs_and_after_the_last(tmp_path):
    epochs = []
    trainer, _ = make_trainer(tmp_path, epochs=5, validate_every=2,
                              validate=lambda m: epochs.append(trainer.engine.state.epoch) or {"AP_IoU_0.10_MaxDet_100": 0.1})
    trainer.run()
    assert epochs == [2, 4, 5]


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    trainer, model = make_trainer(tmp_path, epochs=1)
    with torch.no_grad():
        model.layer.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="iteration 1"):
        trainer.run()
