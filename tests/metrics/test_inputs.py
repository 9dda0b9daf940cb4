from __future__ import annotations

import json

import numpy as np
import pytest

from shared.metrics.errors import EvaluationInputError
from shared.metrics.inputs import load_ground_truth, load_predictions


@pytest.fixture
def datalist(tmp_path):
    content = {"test": [
        {"image": "scans/a.nii.gz", "box": [[10, 10, 10, 4, 4, 4]], "label": [1]},
        {"image": "scans/b.nii.gz", "box": [], "label": []},
        {"image": "scans/c.nii.gz"},
    ], "training": []}
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    return path


def _write(tmp_path, content, name="predictions.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_ground_truth_boxes_become_xyzxyz(datalist):
    truth = load_ground_truth(datalist, "test", class_names=["benign", "malignant"])
    np.testing.assert_array_equal(truth.boxes[0], [[8, 8, 8, 12, 12, 12]])
    assert truth.labels[0].tolist() == [1] and truth.boxes[2].shape == (0, 6)
    assert load_ground_truth(datalist, "test").class_names == ["class_0", "class_1"]


def test_class_names_default_to_the_datalists_classes(datalist, tmp_path):
    named = _write(tmp_path, {**json.loads(datalist.read_text()), "classes": ["benign", "malignant"]}, "named.json")
    assert load_ground_truth(named, "test").class_names == ["benign", "malignant"]
    too_few = _write(tmp_path, {**json.loads(datalist.read_text()), "classes": ["benign"]}, "too_few.json")
    with pytest.raises(EvaluationInputError, match="class 1 is unknown") as raised:
        load_ground_truth(too_few, "test")
    # the names came from the datalist, so the message points there, not at class_names
    assert "the datalist's 'classes' ['benign'] name 1 class" in str(raised.value)
    assert "give class_names naming every class" not in str(raised.value)
    with pytest.raises(EvaluationInputError, match=r"class_names \['benign'\] name 1 class"):
        load_ground_truth(datalist, "test", class_names=["benign"])
    # a prediction's label is checked against the same names, with the same pointer to where they came from
    beyond = [{"image": "scans/a.nii.gz", "box": [[1, 1, 1, 2, 2, 2]], "label": [2], "label_scores": [0.5]}]
    with pytest.raises(EvaluationInputError, match=r"class 2 is unknown: the datalist's 'classes' \['benign', "
                                                   r"'malignant'\] name 2 classes .*add the missing classes"):
        load_predictions(_write(tmp_path, beyond), load_ground_truth(named, "test"))
    with pytest.raises(EvaluationInputError, match=r"made from the datalist's largest label \['class_0', 'class_1'\]"):
        load_predictions(_write(tmp_path, beyond), load_ground_truth(datalist, "test"))


def test_predictions_match_by_written_or_absolute_path_and_wrapped_dicts(datalist, tmp_path):
    truth = load_ground_truth(datalist, "test")
    absolute = str((tmp_path / "scans" / "b.nii.gz").resolve())
    entries = [{"image": "scans/a.nii.gz", "box": [[10, 10, 10, 4, 4, 4]], "label": [1], "label_scores": [0.5]},
               {"image": absolute, "box": [], "label": [], "label_scores": []}]
    found = load_predictions(_write(tmp_path, {"validation": entries}), truth)
    assert found.scores[0].tolist() == [0.5] and found.images_without_entry == ["scans/c.nii.gz"]


def test_predictions_match_through_a_symlinked_data_folder(tmp_path):
    # inference reads the datalist with symbolic links resolved; the evaluated datalist may sit behind one
    (tmp_path / "real" / "scans").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    content = {"test": [{"image": "scans/a.nii.gz", "box": [[10, 10, 10, 4, 4, 4]], "label": [0]}]}
    (tmp_path / "real" / "datalist.json").write_text(json.dumps(content))
    truth = load_ground_truth(tmp_path / "link" / "datalist.json", "test")
    resolved = str(tmp_path.resolve() / "real" / "scans" / "a.nii.gz")
    entries = [{"image": resolved, "box": [[10, 10, 10, 4, 4, 4]], "label": [0], "label_scores": [0.9]}]
    assert load_predictions(_write(tmp_path, entries), truth).scores[0].tolist() == [0.9]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{", "malformed JSON"),
        ([{"image": "scans/zzz.nii.gz", "box": [], "label": [], "label_scores": []}], "zzz.*not in the evaluated"),
        ([{"image": "scans/a.nii.gz", "box": [[1, 1, 1, -2, 2, 2]], "label": [0], "label_scores": [0.5]}],
         "a.nii.gz.*'box'.*negative size"),
        ([{"image": "scans/a.nii.gz", "box": [[1, 1, 1, 2, 2, 2]], "label": [0], "label_scores": [float("nan")]}],
         "a.nii.gz.*'label_scores'.*NaN"),
        ([{"image": "scans/a.nii.gz", "box": [[1, 1, 1, 2, 2, 2]], "label": [0, 1], "label_scores": [0.5]}],
         "a.nii.gz.*'label'.*1 boxes, got 2"),
        ([{"image": "scans/a.nii.gz", "box": [[1, 1, 1, 2, 2, 2]], "label": [0], "label_scores": []}],
         "'label_scores'.*1 boxes, got 0"),
        ([{"image": "scans/a.nii.gz", "box": [[1, 1, 1, 2, 2, 2]], "label": ["cyst"], "label_scores": [0.5]}],
         "unknown class name 'cyst'"),
        ([{"image": "scans/a.nii.gz", "box": [[1, 1, 1, 2, 2, 2]], "label": [7], "label_scores": [0.5]}],
         "class 7 is unknown"),
        ([{"image": "scans/a.nii.gz", "box": [[1, 2, 3]], "label": [0], "label_scores": [0.5]}], "shape"),
        ({"something": []}, "expected a list"),
        ([{"image": "scans/a.nii.gz", "box": [[1, 1, 1, 2, 2, "cyst"]], "label": [0], "label_scores": [0.5]}],
         r"'box': box 0 holds 'cyst', not a number \(class labels go in 'label'\)"),
        ([{"image": "scans/a.nii.gz", "box": [[1, 1, 1, 2, 2, 2]], "label": [True], "label_scores": [0.5]}],
         "label True is neither a class index nor a class name"),
    ],
)
def test_bad_predictions_raise_clear_errors(datalist, tmp_path, content, message):
    truth = load_ground_truth(datalist, "test", class_names=["benign", "malignant"])
    path = _write(tmp_path, content)
    with pytest.raises(EvaluationInputError, match=message) as raised:
        load_predictions(path, truth)
    assert str(path) in str(raised.value)


def test_bad_datalists(tmp_path, datalist):
    with pytest.raises(EvaluationInputError, match="split key 'validation'"):
        load_ground_truth(datalist, "validation")
    duplicated = _write(tmp_path, {"test": [{"image": "x"}, {"image": "x"}]}, "d.json")
    with pytest.raises(EvaluationInputError, match="appears twice"):
        load_ground_truth(duplicated)
    with pytest.raises(EvaluationInputError, match="not found"):
        load_ground_truth(tmp_path / "missing.json")
    truth = load_ground_truth(datalist)
    twice = [{"image": "scans/b.nii.gz", "box": [], "label": [], "label_scores": []}] * 2
    with pytest.raises(EvaluationInputError, match="more than one"):
        load_predictions(_write(tmp_path, twice), truth)


def test_a_folder_or_a_binary_file_as_predictions_is_one_clear_error(datalist, tmp_path):
    truth = load_ground_truth(datalist, "test")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(EvaluationInputError, match=r"folder.json: is a folder, not a JSON file"):
        load_predictions(tmp_path / "folder.json", truth)
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xd3\x8e\xff\xfe")
    with pytest.raises(EvaluationInputError, match=r"model.pt: not a JSON text file \(binary content"):
        load_predictions(binary, truth)


def test_an_empty_split_is_named_as_such(tmp_path):
    path = _write(tmp_path, {"test": [], "training": [{"image": "a.nii.gz"}]}, "empty.json")
    expected = r"empty.json: split 'test' has no images.*--split\): training \(1\)\."
    with pytest.raises(EvaluationInputError, match=expected):
        load_ground_truth(path, "test")


def test_string_labels_without_class_names_say_where_names_come_from(tmp_path):
    path = _write(tmp_path, {"test": [{"image": "a.nii.gz", "box": [[1, 1, 1, 2, 2, 2]], "label": ["nodule"]}]})
    with pytest.raises(EvaluationInputError, match="class name 'nodule' needs class names"):
        load_ground_truth(path, "test")


def test_out_of_range_scores_and_zero_size_boxes_warn_once_with_counts(datalist, tmp_path):
    truth = load_ground_truth(datalist, "test")
    entries = [{"image": "scans/a.nii.gz", "box": [[1, 1, 1, 2, 2, 2], [1, 1, 1, 0, 2, 2], [1, 1, 1, 2, 2, 2]],
                "label": [0, 0, 0], "label_scores": [1.5, 0.5, -0.25]},
               {"image": "scans/b.nii.gz", "box": [[1, 1, 1, 2, 0, 2]], "label": [0], "label_scores": [3.0]}]
    path = _write(tmp_path, entries)
    with pytest.warns(UserWarning) as caught:
        load_predictions(path, truth)
    messages = [str(warning.message) for warning in caught]
    scores = [m for m in messages if "outside [0, 1]" in m]
    sizes = [m for m in messages if "zero size" in m]
    assert len(scores) == 1 and len(sizes) == 1 and len(messages) == 2
    assert scores[0].startswith(f"{path}: 3 scores in 2 images") and "-0.25 .. 3" in scores[0]
    assert sizes[0].startswith(f"{path}: 2 predicted boxes of zero size in 2 images")
