"""Validation every N epochs and always after the last one, so every run has a best model."""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler


class PeriodicValidation(ValidationHandler):
    """MONAI's ``ValidationHandler`` at the end of every ``interval``-th epoch and of the last epoch.

    Every rank runs the validator on its share of the cases; the detection metric gathers them
    (:class:`shared.metrics.ignite.DetectionMetrics`). List it before the model saver and the
    checkpoint handler in ``train#handlers``: an epoch's checkpoint comes after its validation.

    Args:
        interval: epochs between validations.
        validator: the evaluator (:class:`shared.engines.evaluator.DetectionEvaluator`).
    """

    def __init__(self, interval: int, validator=None):
        if interval < 1:
            raise ValueError(f"interval: expected a positive number of epochs, got {interval}")
        super().__init__(interval=interval, validator=validator, epoch_level=True)

    def attach(self, engine: Engine) -> None:
        def due(engine: Engine, epoch: int) -> bool:
            return epoch % self.interval == 0 or epoch == engine.state.max_epochs

        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=due), self)


class EarlyStopOnValidation:
    """Optional early stopping: MONAI's ``EarlyStopHandler`` on the validator's key metric.

    Listed in ``train#handlers`` (after :class:`PeriodicValidation`), it attaches to the validator and
    stops the trainer after ``patience`` validations without improvement. The run then ends like a
    finished one (``model_final.pt`` is written); the patience count is not part of the checkpoint, so
    the same command started again trains on from there.

    Args:
        patience: validations without improvement before stopping.
        validator: the evaluator the validation handler runs.
        min_delta: the least improvement that counts.
    """

    def __init__(self, patience: int, validator, *, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience: expected a positive number of validations, got {patience}")
        self.patience, self.validator, self.min_delta = int(patience), validator, float(min_delta)

    def score(self, validator: Engine) -> float:
        return float(validator.state.metrics[validator.state.key_metric_name])

    def attach(self, engine: Engine) -> None:
        from monai.handlers import EarlyStopHandler

        EarlyStopHandler(self.patience, self.score, trainer=engine, min_delta=self.min_delta).attach(self.validator)
