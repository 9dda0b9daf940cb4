import pytest
import torch

from shared.engines.validation import DetectionValidator, predict_cases
from shared.inference.inferer import SlidingWindowDetectionInferer

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


def test_validator_scores_exact_detections_of_cached_cases_as_perfect(tmp_path):
    from tests.data.conftest import write_case

    for index, case in enumerate(CASES):
        write_case(tmp_path, f"case{index}", case["image"].numpy(), boxes=case["boxes"].numpy(), labels=[index])
    inferer = ExactInferer()
    validator = DetectionValidator(tmp_path, ["case0", "case1"], class_names=["a", "b"], inferer=inferer)
    assert validator(None)["AP_IoU_0.10_MaxDet_100"] == pytest.approx(1.0)
    assert len(inferer.calls) == 2


def test_validator_builds_the_sliding_window_inferer_from_patch_and_settings(tmp_path):
    from tests.data.conftest import write_case

    write_case(tmp_path, "case0", CASES[0]["image"].numpy(), boxes=BOXES[0].numpy(), labels=[0])
    validator = DetectionValidator(tmp_path, ["case0"], class_names=["a"], patch_size=[16, 16, 8],
                                   inference={"mirror": True, "score_threshold": 0.2})
    assert isinstance(validator.inferer, SlidingWindowDetectionInferer)
    assert validator.inferer.patch_size == (16, 16, 8)
    assert validator.inferer.settings == {"mirror": True, "score_threshold": 0.2}
    with pytest.raises(ValueError, match="inferer or the patch_size"):
        DetectionValidator(tmp_path, ["case0"], class_names=["a"])
