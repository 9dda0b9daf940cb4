"""The learning probe runs at smoke-test size and prints one table row per evaluation."""

import pytest

from shared.data.synthetic import make_dataset
from tools.benchmarks.learning_probe import main


@pytest.fixture(scope="module")
def datalist(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    counts = {"training": 2, "validation": 1, "test": 0, "unlabelled": 0}
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    return root / "data" / "datalist.json"


@pytest.mark.parametrize("classification", ["focal", "hard_negative_bce"])
def test_learning_probe_prints_a_row_per_evaluation(datalist, tmp_path, capsys, classification):
    main(str(datalist), str(tmp_path / "cache"), spacing=2.0, patch_size=32, iterations=3, eval_every=2,
         preset="tiny", decoder_channels=16, detection_strides=[4, 8], train_cases=1, classification=classification)
    output = capsys.readouterr().out
    rows = [line for line in output.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 2", "| 3"]
    assert f"{classification} classification" in output


def test_learning_probe_refuses_an_unknown_classification_loss(datalist, tmp_path):
    with pytest.raises(ValueError, match="hard_negative_bce"):
        main(str(datalist), str(tmp_path / "cache"), classification="softmax")
