import pytest
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from shared.engines.evaluator import DetectionEvaluator
from shared.engines.handlers_progress import ProgressBar
from shared.engines.sampler import ShardSampler
from shared.metrics.ignite import DetectionMetrics

BOXES = [torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0, 4.0]]), torch.tensor([[8.0, 8.0, 8.0, 12.0, 12.0, 12.0]])]
CASES = [{"image": torch.full((1, 16, 16, 16), float(index)), "boxes": BOXES[index], "labels": torch.tensor([index])}
         for index in range(2)]


class ShiftedInferer:
    """Inferer stand-in: the case's box, shifted by ``shift`` voxels, and the calls it got."""

    def __init__(self, shift=0.0):
        self.shift, self.calls = shift, []

    def __call__(self, images, network):
        self.calls.append((tuple(images.shape), network))
        index = int(images.flatten()[0])
        return {"boxes": BOXES[index] + self.shift, "labels": torch.tensor([index]), "scores": torch.tensor([0.9])}


def _evaluator(inferer, cases=CASES, **kwargs):
    loader = DataLoader(cases, batch_size=1)
    return DetectionEvaluator("cpu", loader, torch.nn.Identity(), inferer=inferer,
                              key_val_metric={"detection": DetectionMetrics(["a", "b"])}, **kwargs)


@pytest.mark.parametrize("shift, expected", [(0.0, 1.0), (3.5, 0.0)])
def test_the_key_metric_is_the_detection_ap_of_whole_cases(shift, expected):
    inferer = ShiftedInferer(shift)  # 3.5 voxels: IoU 0.5³/7.5³ < 0.1, a miss
    evaluator = _evaluator(inferer)
    evaluator.run(global_epoch=3)
    assert evaluator.state.key_metric_name == "AP_IoU_0.10_MaxDet_100"
    assert evaluator.state.metrics["AP_IoU_0.10_MaxDet_100"] == pytest.approx(expected)
    assert evaluator.state.epoch == 3, "the trainer's epoch, for the handlers"
    # one whole volume per call, with its batch axis, and the network passed through
    assert [shape for shape, _ in inferer.calls] == [(1, 1, 16, 16, 16)] * 2


def test_uncollated_cases_are_scored_alike():
    evaluator = _evaluator(ShiftedInferer())
    evaluator.data_loader = CASES
    evaluator.run()
    assert evaluator.state.metrics["AP_IoU_0.10_MaxDet_100"] == pytest.approx(1.0)


def test_a_rank_without_cases_still_computes_the_metrics_and_completes():
    completed = []
    evaluator = _evaluator(ShiftedInferer(), cases=[])
    evaluator.add_event_handler(Events.COMPLETED, lambda engine: completed.append(engine.state.epoch))
    evaluator.run(global_epoch=2)
    assert completed == [2] and "AP_IoU_0.10_MaxDet_100" in evaluator.state.metrics


def test_validation_shows_its_progress(capsys):
    evaluator = _evaluator(ShiftedInferer(), val_handlers=[ProgressBar("validation")])
    evaluator.run()
    shown = capsys.readouterr().err
    assert "validation" in shown and "2/2" in shown


@pytest.mark.parametrize("length, world_size", [(5, 2), (1, 2), (0, 3), (7, 3)])
def test_shards_cover_the_cases_once_without_padding(length, world_size):
    shards = [list(ShardSampler(length, rank=rank, world_size=world_size)) for rank in range(world_size)]
    assert sorted(index for shard in shards for index in shard) == list(range(length))
    assert [len(ShardSampler(range(length), rank=rank, world_size=world_size)) for rank in range(world_size)] == \
        [len(shard) for shard in shards]
