import json
from pathlib import Path

import numpy as np

from shared.data.synthetic.baseline import average_precision_at, detect_blobs, lung_mask
from shared.io.datalist import read_split
from tools.baseline import main as baseline_cli


def test_baseline_writes_valid_predictions(tiny_lung, tmp_path):
    _, datalist = tiny_lung
    ap = baseline_cli(datalist=datalist, split="training", out=str(tmp_path / "p.json"))
    predictions = json.loads((tmp_path / "p.json").read_text())
    entries = read_split(datalist, "training")
    written = json.loads(open(datalist).read())["training"]
    assert [p["image"] for p in predictions] == [e["image"] for e in written]
    for prediction in predictions:
        boxes = np.asarray(prediction["box"]).reshape(-1, 6)
        scores = np.asarray(prediction["label_scores"])
        assert len(boxes) == len(scores) == len(prediction["label"]) <= 100
        assert (boxes[:, 3:] > 0).all() and np.all(np.diff(scores) <= 0) and ((scores > 0) & (scores < 1)).all()
        assert set(prediction["label"]) <= {0, 1}
    assert 0.0 <= ap <= 1.0


def test_average_precision_of_truth_is_one_and_of_nothing_is_zero(tiny_lung):
    _, datalist = tiny_lung
    entries = read_split(datalist, "training")
    perfect = [{"box": e["box"], "label": e["label"], "label_scores": [1.0] * len(e["label"])} for e in entries]
    assert average_precision_at(perfect, entries, 2) == 1.0
    nothing = [{"box": [], "label": [], "label_scores": []} for _ in entries]
    assert average_precision_at(nothing, entries, 2) <= 0.0


def test_blob_detector_finds_a_sphere_in_air():
    hu = np.full((40, 40, 30), -850.0, dtype=np.float32)
    hu[[0, -1]] = 40.0  # chest wall on two sides so the lung is not "outside air"
    x, y, z = np.meshgrid(np.arange(40), np.arange(40), np.arange(30), indexing="ij")
    hu[(x - 20) ** 2 + (y - 18) ** 2 + ((z - 15) * 2) ** 2 <= 16] = 30.0  # radius 4 voxels at 1 x 1 x 0.5 mm
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    assert lung_mask(hu, (1.0, 1.0, 2.0))[20, 18, 15]
    found = detect_blobs(hu, affine)
    best = np.asarray(found["box"][0])
    # world LPS: x and y flip sign under a RAS affine
    np.testing.assert_allclose(best[:3], [-20.0, -18.0, 30.0], atol=1.5)
    assert 4 < best[3] < 14


def test_average_precision_ignores_a_class_without_ground_truth():
    truths = [{"box": [[0, 0, 0, 4, 4, 4]], "label": [1]}, {"box": [[10, 10, 10, 4, 4, 4]], "label": [1]}]
    found = [{"box": [[0, 0, 0, 4, 4, 4], [30, 30, 30, 4, 4, 4]], "label": [1, 0], "label_scores": [0.9, 0.8]},
             {"box": [[10.5, 10, 10, 4, 4, 4]], "label": [1], "label_scores": [0.7]}]
    assert average_precision_at(found, truths, 2) == 1.0
    # a false positive ranked first: precision 1/2 at recall 1/2, 2/3 at recall 1; interpolated
    # precision is the best at any higher recall, so 2/3 at all 101 points
    found[1]["label_scores"] = [0.95]
    found[0]["box"][1], found[0]["label"][1], found[0]["label_scores"][1] = [30, 30, 30, 4, 4, 4], 1, 0.99
    assert abs(average_precision_at(found, truths, 2) - 2 / 3) < 1e-6


def test_baseline_labels_every_blob_a_nodule_when_the_task_has_one_class(tmp_path):
    from tools.baseline import predict
    from tools.make_dataset import main as make_dataset_cli

    datalist = make_dataset_cli("lung_nodules", str(tmp_path / "data"), num_training=1, num_validation=1, num_test=2,
                                num_unlabelled=0, shape=(40, 40, 24), previews=False)
    predictions = predict(datalist, "test")
    assert [p["image"] for p in predictions] == [e["image"] for e in json.loads(Path(datalist).read_text())["test"]]
    assert {label for p in predictions for label in p["label"]} == {0}
