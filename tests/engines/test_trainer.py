import json
import logging
import multiprocessing
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator
from monai.handlers import TensorBoardStatsHandler
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shared.engines.handlers_checkpoint import ResumableCheckpoint
from shared.engines.handlers_model import ModelSaver
from shared.engines.handlers_validation import EarlyStopOnValidation, PeriodicValidation
from shared.engines.sampler import ResumableBatchSampler
from shared.engines.schedule import PolyLearningRate
from shared.engines.trainer import LossDictTrainer, prepare_image_batch
from shared.io.errors import InputError


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


class CalledMetric(Metric):
    """The key metric of a test: ``validate(model)`` computed once per validation."""

    def __init__(self, validate, model):
        self.validate, self.model = validate, model
        super().__init__()

    def reset(self):
        pass

    def update(self, output):
        pass

    def compute(self):
        return self.validate(self.model)["AP_IoU_0.10_MaxDet_100"]


def make_trainer(tmp_path, epochs, validate=None, validate_every=1, patience=None):
    """The handlers of a bundle's ``train#handlers`` around a linear regressor (4 iterations an epoch)."""
    torch.manual_seed(0)
    model = Regressor()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=3e-5)
    loader = DataLoader(SeededNoise(), batch_sampler=ResumableBatchSampler(3))
    handlers = [PolyLearningRate(0.1, 4 * epochs, lr_warmup_iterations=3)]
    evaluator = None
    if validate is not None:
        evaluator = SupervisedEvaluator("cpu", [0], model, iteration_update=lambda engine, batch: None,
                                        key_val_metric={"AP_IoU_0.10_MaxDet_100": CalledMetric(validate, model)},
                                        decollate=False)
        handlers.append(PeriodicValidation(validate_every, evaluator))
        if patience:
            handlers.append(EarlyStopOnValidation(patience, evaluator))
    checkpoint = ResumableCheckpoint(tmp_path, every=2)
    handlers += [ModelSaver(tmp_path, model, validator=evaluator), checkpoint,
                 TensorBoardStatsHandler(log_dir=str(tmp_path / "logs"), iteration_log=10, epoch_log=False,
                                         output_transform=lambda output: output)]
    trainer = LossDictTrainer("cpu", epochs, loader, model, optimizer, epoch_length=4,
                               prepare_batch=prepare_image_batch, train_handlers=handlers)
    trainer.checkpoint, trainer.model_saver = checkpoint, handlers[-3]
    return trainer, model


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    straight, straight_model = make_trainer(tmp_path / "straight", epochs=3)
    straight.run()

    first, _ = make_trainer(tmp_path / "resumed", epochs=3)
    stop_at = 6  # mid-epoch, on a checkpoint
    first.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda engine: engine.terminate())
    first.run()
    assert first.checkpoint.last_checkpoint().name.endswith(f"_{stop_at}.pt")

    second, resumed_model = make_trainer(tmp_path / "resumed", epochs=3)
    second.run()
    assert second.state.iteration == 12
    assert [path.name for path in (tmp_path / "resumed" / "checkpoints").iterdir()] == ["last_checkpoint_12.pt"]
    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_validation_saves_the_best_model_and_logs(tmp_path):
    scores, seen = iter([0.2, 0.5, 0.3]), []  # scripted: epoch 2 is the best, epoch 3 the last

    def validate(model):
        seen.append({name: value.clone() for name, value in model.state_dict().items()})
        return {"AP_IoU_0.10_MaxDet_100": next(scores)}

    trainer, model = make_trainer(tmp_path, epochs=3, validate=validate)
    trainer.run()
    best = torch.load(tmp_path / "model.pt", weights_only=True)
    final = torch.load(tmp_path / "model_final.pt", weights_only=True)
    assert set(best) == set(model.state_dict())
    for name in best:
        torch.testing.assert_close(best[name], seen[1][name], rtol=0, atol=0)
        torch.testing.assert_close(final[name], seen[2][name], rtol=0, atol=0)
        torch.testing.assert_close(final[name], model.state_dict()[name], rtol=0, atol=0)
    assert not torch.equal(best["layer.weight"], final["layer.weight"]), "epoch 3 trained on"
    assert json.loads((tmp_path / "model_best.json").read_text())["iteration"] == 8
    assert list((tmp_path / "logs").iterdir()), "TensorBoard logs are written"
    assert trainer.model_saver.best_metric() == pytest.approx(0.5)


def test_validation_runs_every_n_epochs_and_after_the_last(tmp_path):
    epochs = []
    trainer, _ = make_trainer(tmp_path, epochs=5, validate_every=2,
                              validate=lambda m: epochs.append(trainer.state.epoch) or {"AP_IoU_0.10_MaxDet_100": 0.1})
    trainer.run()
    assert epochs == [2, 4, 5]


def test_early_stopping_ends_the_run_after_patience_validations_without_improvement(tmp_path):
    scores = iter([0.2, 0.5, 0.4, 0.3, 0.9, 0.9])
    trainer, model = make_trainer(tmp_path, epochs=6, validate=lambda m: {"AP_IoU_0.10_MaxDet_100": next(scores)},
                                  patience=2)
    trainer.run()
    assert trainer.state.epoch == 4, "epochs 3 and 4 did not beat epoch 2"
    assert json.loads((tmp_path / "model_best.json").read_text())["iteration"] == 8
    final = torch.load(tmp_path / "model_final.pt", weights_only=True)
    torch.testing.assert_close(final["layer.weight"], model.layer.weight.detach(), rtol=0, atol=0)


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    trainer, model = make_trainer(tmp_path, epochs=1)
    with torch.no_grad():
        model.layer.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="iteration 1"):
        trainer.run()


# -- re-runs, kills and resume ------------------------------------------------------------------------
KILLED = 17  # exit status of a child killed at a named point
FIXED_BATCH = torch.randn(8, 4, generator=torch.Generator().manual_seed(99))


def validate_on_a_fixed_batch(model):
    """A score that depends on the weights, so the best model moves as training goes."""
    with torch.no_grad():
        return {"AP_IoU_0.10_MaxDet_100": -float(model(FIXED_BATCH)["loss"])}


def outputs(folder):
    """Every file a run leaves (TensorBoard logs aside) with its bytes."""
    files = (path.relative_to(folder) for path in sorted(folder.rglob("*")) if path.is_file())
    return {str(path): (folder / path).read_bytes() for path in files if path.parts[0] != "logs"}


def run_killed_at(folder, point):
    """In a child process: train 3 epochs with validation and die (os._exit, no clean-up) at ``point``."""
    import os

    torch.set_num_threads(1)

    def validate(model):
        if point == "final validation" and trainer.state.epoch == 3:
            os._exit(KILLED)
        return validate_on_a_fixed_batch(model)

    trainer, _ = make_trainer(folder, epochs=3, validate=validate)
    save = torch.save

    def save_then_die(data, path, *args, **kwargs):
        name = Path(getattr(path, "name", path)).name
        if point == "checkpoint write" and name == "last_checkpoint_10.pt" or \
                point == "model.pt write" and name == "model.pt" and trainer.state.epoch == 3 or \
                point == "model_final.pt write" and name == "model_final.pt":
            Path(path).write_bytes(b"PK\x03\x04 half a file")
            os._exit(KILLED)
        return save(data, path, *args, **kwargs)

    torch.save = save_then_die
    if point == "mid-epoch":
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=7), lambda e: os._exit(KILLED))
    if point == "after the checkpoint, before the old one is deleted":
        def die_at_10():
            if trainer.state.iteration == 10:
                os._exit(KILLED)

        trainer.checkpoint.remove_older_checkpoints = die_at_10
    trainer.run()


@pytest.mark.parametrize("point", ["mid-epoch", "checkpoint write", "after the checkpoint, before the old one is deleted",
                                   "final validation", "model.pt write", "model_final.pt write"])
def test_a_run_killed_at_any_moment_resumes_to_the_same_weights_and_files(tmp_path, point):
    straight, _ = make_trainer(tmp_path / "straight", epochs=3, validate=validate_on_a_fixed_batch)
    straight.run()
    expected = outputs(tmp_path / "straight")
    assert json.loads(expected["model_best.json"])["iteration"] == 12, "the final validation saves model.pt"

    child = multiprocessing.get_context("spawn").Process(target=run_killed_at, args=(tmp_path / "killed", point))
    child.start()
    child.join(60)
    assert child.exitcode == KILLED, f"the child did not die at {point}"
    checkpoints = sorted(path.name for path in (tmp_path / "killed" / "checkpoints").iterdir())
    if point == "checkpoint write":  # the only complete checkpoint survives beside the half-written one
        assert "last_checkpoint_8.pt" in checkpoints and any(name.endswith(".tmp") for name in checkpoints)

    resumed, _ = make_trainer(tmp_path / "killed", epochs=3, validate=validate_on_a_fixed_batch)
    starts = []
    resumed.add_event_handler(Events.STARTED, lambda e: starts.append(e.state.iteration))
    resumed.run()
    if point == "checkpoint write":
        assert starts == [8]
    assert outputs(tmp_path / "killed") == expected


def test_a_finished_run_started_again_says_so_and_does_not_train(tmp_path, caplog):
    trainer, _ = make_trainer(tmp_path, epochs=2, validate=validate_on_a_fixed_batch)
    trainer.run()
    expected = outputs(tmp_path)

    again, _ = make_trainer(tmp_path, epochs=2, validate=validate_on_a_fixed_batch)
    iterations = []
    again.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    with caplog.at_level(logging.INFO, logger="shared.engines.handlers_checkpoint"):
        again.run()
    assert iterations == [] and again.state.iteration == 8
    assert any("training finished before" in record.getMessage() for record in caplog.records)
    assert outputs(tmp_path) == expected


def test_a_finished_run_started_again_writes_missing_final_weights(tmp_path):
    trainer, _ = make_trainer(tmp_path, epochs=2)
    trainer.run()
    expected = outputs(tmp_path)
    (tmp_path / "model.pt").unlink()
    (tmp_path / "model_final.pt").unlink()
    make_trainer(tmp_path, epochs=2)[0].run()
    assert outputs(tmp_path) == expected


def test_raising_the_epochs_trains_on_from_the_last_checkpoint(tmp_path):
    make_trainer(tmp_path, epochs=2)[0].run()
    two_epochs = (tmp_path / "model_final.pt").read_bytes()
    longer, _ = make_trainer(tmp_path, epochs=3)
    iterations = []
    longer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    longer.run()
    assert iterations == [9, 10, 11, 12]
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == ["last_checkpoint_12.pt"]
    assert (tmp_path / "model_final.pt").read_bytes() != two_epochs


def test_orphaned_temporaries_are_removed_on_start(tmp_path):
    (tmp_path / "checkpoints").mkdir(parents=True)
    orphans = [tmp_path / "checkpoints" / "tmpx1y2z3.pt", tmp_path / "checkpoints" / ".last_checkpoint_4.pt.ab.tmp",
               tmp_path / ".model.pt.cd.tmp.pt"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    make_trainer(tmp_path, epochs=1)[0].run()
    assert not any(orphan.exists() for orphan in orphans)


def test_a_checkpoint_that_is_not_weights_only_is_refused_in_one_line(tmp_path):
    (tmp_path / "checkpoints").mkdir(parents=True)
    bad = tmp_path / "checkpoints" / "last_checkpoint_4.pt"
    torch.save({"model": nn.Linear(4, 4)}, bad)
    trainer, _ = make_trainer(tmp_path, epochs=2)
    with pytest.raises(InputError, match="cannot resume from this checkpoint.*delete it.*--force") as raised:
        trainer.run()
    message = str(raised.value)
    assert message.startswith(str(bad)) and "\n" not in message and "weights_only" not in message


def test_fewer_epochs_than_the_checkpoint_has_are_refused_in_one_line(tmp_path):
    make_trainer(tmp_path, epochs=2)[0].run()
    with pytest.raises(InputError, match="last_checkpoint_8.pt: is at iteration 8, past this run's 4") as raised:
        make_trainer(tmp_path, epochs=1)[0].run()
    assert "\n" not in str(raised.value)
