"""The learning probe: its scores against golden values, and a smoke-test-size run through the loop."""

import math

import pytest
import torch

from shared.data.synthetic import make_dataset
from shared.inference import inferer
from tools.benchmarks.learning_probe import main, score_cases


@pytest.fixture(scope="module")
def datalist(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    counts = {"training": 2, "validation": 1, "test": 0, "unlabelled": 0}
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    return root / "data" / "datalist.json"


def _score_two_cases(monkeypatch, predicted_labels):
    """Two cases, one object each (class 0, then class 1), found exactly with the given labels."""
    boxes = [torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0, 4.0]]), torch.tensor([[8.0, 8.0, 8.0, 12.0, 12.0, 12.0]])]
    cases = [{"image": torch.full((1, 16, 16, 16), float(index)), "boxes": boxes[index],
              "labels": torch.tensor([index])} for index in range(2)]
    scores = [0.9, 0.6]

    def found(detector, image, **kwargs):  # the detections of the case whose image this is
        index = int(image.flatten()[0])
        return {"boxes": boxes[index], "labels": torch.tensor([predicted_labels[index]]),
                "scores": torch.tensor([scores[index]])}

    monkeypatch.setattr(inferer, "predict_volume", found)  # under score_cases' predict_cases and inferer
    return score_cases(None, cases, ["benign", "malignant"], [16, 16, 16])


def test_scores_of_exact_detections_with_the_right_labels(monkeypatch):
    scores = _score_two_cases(monkeypatch, predicted_labels=[0, 1])
    assert scores == pytest.approx({"AP": 1.0, "AP_any": 1.0, "AR_any": 1.0, "top_score": 0.75})


def test_swapped_labels_score_zero_per_class_but_full_marks_class_agnostic(monkeypatch):
    scores = _score_two_cases(monkeypatch, predicted_labels=[1, 0])
    assert scores == pytest.approx({"AP": 0.0, "AP_any": 1.0, "AR_any": 1.0, "top_score": 0.75})


def _rows(output: str) -> list[list[str]]:
    lines = [line for line in output.splitlines() if line.startswith("| ") and line[2].isdigit()]
    return [line.strip("| ").split(" | ") for line in lines]


def test_learning_probe_prints_a_row_per_evaluation_and_trains_with_the_chosen_loss(datalist, tmp_path, capsys):
    classification = {}
    for loss in ["focal", "hard_negative_bce"]:
        main(str(datalist), str(tmp_path / "cache"), spacing=2.0, patch_size=32, iterations=3, eval_every=2,
             preset="tiny", decoder_channels=16, detection_strides=[4, 8], train_cases=1, classification=loss)
        output = capsys.readouterr().out
        rows = _rows(output)
        assert [row[0] for row in rows] == ["2", "3"]
        assert f"{loss} classification" in output
        for row in rows:
            values = [float(value) for value in row[2:]]
            assert all(value >= 0 for value in values[:4]), "losses"
            # NaN: a class without ground truth in the one validation scan has no AP
            assert all(math.isnan(value) or 0 <= value <= 1 for value in values[4:]), "AP, AR and scores"
        classification[loss] = [row[2] for row in rows]
    # same seed, data and network: only the classification loss differs, so its values must
    assert classification["focal"] != classification["hard_negative_bce"]


def test_learning_probe_refuses_an_unknown_classification_loss(datalist, tmp_path):
    with pytest.raises(ValueError, match="hard_negative_bce"):
        main(str(datalist), str(tmp_path / "cache"), classification="softmax")
