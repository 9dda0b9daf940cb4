import pytest
import torch

from torch.utils.data import DataLoader

from shared.data.dataset import ValidationCaseDataset
from shared.engines.evaluator import DetectionEvaluator
from shared.engines.sampler import ShardSampler
from shared.engines.validation import predict_cases
from shared.metrics.ignite import DetectionMetrics

BOXES = [torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0, 4.0]]), torch.tensor([[8.0, 8.0, 8.0, 12.0, 12.0, 12.0]])]
CASES = [{"image": torch.full((1, 16, 16, 16), float(index)), "boxes": BOXES[index], "labels": torch.tensor([index])}
         for index in range(2)]


class ExactInferer:
    """Inferer stand-in: the ground truth of the case whose image it gets, and the calls it got."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, detector):
        self.calls.append((tuple(images.shape), detector))
        index = int(images.flatten()[0])
        return {"boxes": BOXES[index], "labels": torch.tensor([index]), "scores": torch.tensor([0.9])}


def test_predict_cases_pairs_each_cases_detections_with_its_ground_truth():
    inferer = ExactInferer()
    pairs = list(predict_cases("detector", CASES, inferer))
    assert len(pairs) == 2
    for index, (found, target) in enumerate(pairs):
        torch.testing.assert_close(found["boxes"], target["boxes"])
        assert target["labels"].tolist() == [index] and found["boxes"].device.type == "cpu"
    # one whole volume per call, with its batch axis, and the detector passed through
    assert inferer.calls == [((1, 1, 16, 16, 16), "detector")] * 2


def test_cached_cases_through_the_bundles_evaluator_score_exact_detections_as_perfect(tmp_path):
    """What replaced the DetectionValidator: validate#dataset/dataloader/evaluator as train.json builds them."""
    from tests.data.conftest import write_case

    for index, case in enumerate(CASES):
        write_case(tmp_path, f"case{index}", case["image"].numpy(), boxes=case["boxes"].numpy(), labels=[index])
    inferer, detector = ExactInferer(), torch.nn.Identity()
    evaluator = cached_case_evaluator(tmp_path, ["case0", "case1"], detector, inferer, ["a", "b"])
    evaluator.run()
    assert evaluator.state.metrics["AP_IoU_0.10_MaxDet_100"] == pytest.approx(1.0)
    assert inferer.calls == [((1, 1, 16, 16, 16), detector)] * 2
    # the same cases through predict_cases pair up alike
    assert len(list(predict_cases("detector", evaluator.data_loader.dataset, ExactInferer()))) == 2


def cached_case_evaluator(cache_dir, cases, detector, inferer, class_names):
    """The detector bundles' ``validate#evaluator`` over cached cases (one rank)."""
    return DetectionEvaluator("cpu", DataLoader(ValidationCaseDataset(cache_dir, cases), batch_size=1,
                                                sampler=ShardSampler(len(cases))),
                              detector, inferer=inferer, key_val_metric={"detection": DetectionMetrics(class_names)})
