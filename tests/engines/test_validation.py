import pytest
import torch

from shared.engines import validation
from shared.engines.validation import DetectionValidator, predict_cases

BOXES = [torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0, 4.0]]), torch.tensor([[8.0, 8.0, 8.0, 12.0, 12.0, 12.0]])]
CASES = [{"image": torch.full((1, 16, 16, 16), float(index)), "boxes": BOXES[index], "labels": torch.tensor([index])}
         for index in range(2)]


@pytest.fixture
def exact_detections(monkeypatch):
    """predict_volume stand-in: the ground truth of the case whose image it is, and the keywords it got."""
    calls = []

    def found(detector, image, **kwargs):
        calls.append(kwargs)
        index = int(image.flatten()[0])
        return {"boxes": BOXES[index], "labels": torch.tensor([index]), "scores": torch.tensor([0.9])}

    monkeypatch.setattr(validation, "predict_volume", found)
    return calls


def test_predict_cases_pairs_each_cases_detections_with_its_ground_truth(exact_detections):
    pairs = list(predict_cases(None, CASES, patch_size=[16] * 3, inference={"score_threshold": 0.2}))
    assert len(pairs) == 2
    for index, (found, target) in enumerate(pairs):
        torch.testing.assert_close(found["boxes"], target["boxes"])
        assert target["labels"].tolist() == [index] and found["boxes"].device.type == "cpu"
    assert exact_detections == [{"patch_size": (16, 16, 16), "score_threshold": 0.2}] * 2


def test_validator_scores_exact_detections_of_cached_cases_as_perfect(tmp_path, exact_detections):
    from tests.data.conftest import write_case

    for index, case in enumerate(CASES):
        write_case(tmp_path, f"case{index}", case["image"].numpy(), boxes=case["boxes"].numpy(), labels=[index])
    validator = DetectionValidator(tmp_path, ["case0", "case1"], class_names=["a", "b"], patch_size=[16] * 3,
                                   inference={"mirror": True})
    assert validator(None)["AP_IoU_0.10_MaxDet_100"] == pytest.approx(1.0)
    assert exact_detections == [{"patch_size": (16, 16, 16), "mirror": True}] * 2
