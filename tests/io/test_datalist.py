import json

import numpy as np
import pytest

from shared.io.datalist import entry_boxes, read_datalist, read_split, write_datalist
from shared.io.errors import InputError


def test_write_read_round_trip_relative_paths(tmp_path):
    (tmp_path / "img").mkdir()
    data = {"training": [{"image": str(tmp_path / "img" / "a.nii.gz"), "box": [[1, 2, 3, 4, 5, 6]], "label": [1],
                          "mask": str(tmp_path / "img" / "a_mask.nii.gz")}],
            "validation": [{"image": [str(tmp_path / "img" / "b_0000.nii.gz"), str(tmp_path / "img" / "b_0001.nii.gz")]}],
            "classes": ["x", "y"]}
    path = write_datalist(tmp_path / "lists" / "d.json", data)
    stored = json.loads(path.read_text())
    assert stored["training"][0]["image"] == "../img/a.nii.gz" and stored["classes"] == ["x", "y"]
    back = read_datalist(path)
    assert back["training"][0]["image"] == data["training"][0]["image"]
    assert back["training"][0]["mask"] == data["training"][0]["mask"]
    assert back["validation"][0]["image"] == data["validation"][0]["image"]
    boxes, labels = entry_boxes(back["training"][0])
    np.testing.assert_array_equal(boxes, [[1, 2, 3, 4, 5, 6]])
    assert labels.tolist() == [1]
    assert entry_boxes(back["validation"][0])[0].shape == (0, 6)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "readable JSON"),
    ('{"other": []}', "at least one"),
    ('{"training": [{"box": []}]}', "'image'"),
    ('{"training": [{"image": "a", "box": [[0,0,0,1,1,1]], "label": []}]}', "1 boxes but 0 labels"),
    ('{"training": [{"image": "a", "box": [[0,0,0,0,1,1]], "label": [0]}]}', "positive"),
    ('{"training": [{"image": "a", "box": [[0,0,0,1,1,1]], "label": [0.5]}]}', "class indices"),
    ('{"training": [{"image": 3}]}', r"training\[0\]: 'image' must be a file path.*got 3"),
    ('{"training": [{"image": null}]}', r"'image' must be a file path.*got null"),
    ('{"training": [{"image": {}}]}', r"'image' must be a file path.*got \{\}"),
    ('{"training": [{"image": []}]}', r"'image' must be a file path.*got \[\]"),
    ('{"training": [{"image": ["a", 2]}]}', "'image' must be a file path"),
    ('{"validation": [{"image": "a", "mask": 5}]}', r"validation\[0\].*'mask' must be a file path or null, got 5"),
])
def test_bad_datalists(tmp_path, content, problem):
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(InputError, match=problem) as caught:
        read_datalist(path)
    assert caught.value.source == str(path)


def test_missing_and_empty_split(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_datalist(tmp_path / "none.json")
    path = tmp_path / "d.json"
    path.write_text('{"training": []}')
    with pytest.raises(InputError, match="empty"):
        read_split(path, "training")


def test_null_mask_means_no_mask(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"training": [{"image": "a.nii.gz", "mask": null}]}')
    assert read_datalist(path)["training"][0]["mask"] is None
