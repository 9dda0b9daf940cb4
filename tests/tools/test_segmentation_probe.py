"""The segmentation probe runs at smoke-test size and prints one table row per evaluation."""

import pytest

from shared.data.synthetic import make_dataset
from tools.benchmarks.segmentation_probe import main


@pytest.mark.parametrize("task", ["lung_ct", "brain_mri"])  # one and two channels
def test_segmentation_probe_prints_a_row_per_evaluation(tmp_path, capsys, task):
    counts = {"training": 2, "validation": 1, "test": 0, "unlabelled": 0}
    make_dataset(task, tmp_path / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    main(str(tmp_path / "data" / "datalist.json"), str(tmp_path / "cache"), spacing=2.0, patch_size=32,
         iterations=3, eval_every=2, num_training=1, features=(4, 4, 8, 8, 8, 4), validation_patches=2)
    output = capsys.readouterr().out
    rows = [line for line in output.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 2", "| 3"]
    assert output.startswith("1 training scans")
