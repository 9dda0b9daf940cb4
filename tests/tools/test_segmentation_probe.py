"""The segmentation probe: its Dice against golden values, and a smoke-test-size run through the loop."""

import math

import pytest
import torch

from shared.data.synthetic import make_dataset
from tools.benchmarks.segmentation_probe import main, validation_dice


class Thresholder(torch.nn.Module):
    """Two-class logits whose argmax is foreground where the image exceeds ``level``."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def forward(self, image):
        return torch.cat([torch.full_like(image, self.level), image], dim=1)


def _samples():
    """Two patches; in each the image is 2 on the object's 8 voxels and 1 on 8 more voxels."""
    samples = []
    for offset in (0, 4):
        seg = torch.zeros(1, 8, 8, 8)
        seg[0, offset:offset + 2, :2, :2] = 1
        image = seg * 2
        image[0, offset:offset + 2, 4:6, 4:6] = 1
        samples.append({"image": image, "seg": seg})
    return samples


@pytest.mark.parametrize("level, expected", [
    (1.5, (1.0, 16, 16)),  # exactly the objects
    (0.5, (2 * 16 / (32 + 16), 32, 16)),  # the objects and as many false voxels
    (3.0, (0.0, 0, 16)),  # nothing
])
def test_validation_dice_pools_the_patches(level, expected):
    network = Thresholder(level)
    dice, predicted, true = validation_dice(network, _samples())
    assert (dice, predicted, true) == pytest.approx(expected)
    assert network.training, "the network is back in training mode"


def _rows(output: str) -> list[list[str]]:
    lines = [line for line in output.splitlines() if line.startswith("| ") and line[2].isdigit()]
    return [line.strip("| ").split(" | ") for line in lines]


@pytest.mark.parametrize("task", ["lung_ct", "brain_mri"])  # one and two channels
def test_segmentation_probe_prints_a_row_per_evaluation(tmp_path, capsys, task):
    # two validation scans: at this size the first lung one holds no nodule
    counts = {"training": 2, "validation": 2, "test": 0, "unlabelled": 0}
    make_dataset(task, tmp_path / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    main(str(tmp_path / "data" / "datalist.json"), str(tmp_path / "cache"), spacing=2.0, patch_size=32,
         iterations=3, eval_every=2, num_training=1, features=(4, 4, 8, 8, 8, 4), validation_patches=2)
    output = capsys.readouterr().out
    rows = _rows(output)
    assert [row[0] for row in rows] == ["2", "3"]
    assert output.startswith("1 training scans")
    for _, _, loss, dice, predicted, true in rows:
        assert math.isfinite(float(loss)) and 0 <= float(dice) <= 1
        # the same validation patches every time, centred on objects: they hold object voxels
        assert int(true) == int(rows[0][5]) > 0
        assert float(dice) <= 2 * min(int(predicted), int(true)) / max(int(predicted) + int(true), 1) + 1e-3
