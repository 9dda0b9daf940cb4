"""The learning probe runs at smoke-test size and prints one table row per evaluation."""

from shared.data.synthetic import make_dataset
from tools.benchmarks.learning_probe import main


def test_learning_probe_prints_a_row_per_evaluation(tmp_path, capsys):
    counts = {"training": 2, "validation": 1, "test": 0, "unlabelled": 0}
    make_dataset("lung_ct", tmp_path / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    main(str(tmp_path / "data" / "datalist.json"), str(tmp_path / "cache"), spacing=2.0, patch_size=32,
         iterations=3, eval_every=2, preset="tiny", decoder_channels=16, detection_strides=[4, 8], train_cases=1)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 2", "| 3"]
