import json

import pytest

from shared.io.errors import InputError
from shared.io.multi_datalist import read_multi_datalist, tasks_of, write_multi_datalist


def collection(tmp_path):
    return {
        "lung_ct": {"classes": ["lungs", "vessels", "nodules"], "modality": ["CT"],
                    "training": [{"image": str(tmp_path / "lung" / "img.nii.gz"),
                                  "label": str(tmp_path / "lung" / "seg.nii.gz")}]},
        "brain_mri": {"classes": ["tissue", "lesion"], "modality": ["T1c", "FLAIR"], "kind": "regions",
                      "regions": [[1, 2], [2]],
                      "training": [{"image": [str(tmp_path / "t1c.nii.gz"), str(tmp_path / "flair.nii.gz")],
                                    "label": str(tmp_path / "brain_seg.nii.gz")}],
                      "validation": [{"image": ["a.nii.gz", "b.nii.gz"], "label": "c.nii.gz"}]},
    }


def test_write_and_read_round_trip_with_relative_paths(tmp_path):
    path = write_multi_datalist(tmp_path / "multi.json", collection(tmp_path), name="toy")
    raw = json.loads(path.read_text())
    assert raw["name"] == "toy"
    assert raw["datasets"]["lung_ct"]["training"][0] == {"image": "lung/img.nii.gz", "label": "lung/seg.nii.gz"}
    assert raw["datasets"]["brain_mri"]["validation"][0]["image"] == ["a.nii.gz", "b.nii.gz"]
    data = read_multi_datalist(path)
    lung, brain = data["datasets"]["lung_ct"], data["datasets"]["brain_mri"]
    assert lung["in_channels"] == 1 and brain["in_channels"] == 2 and lung["validation"] == []
    assert lung["training"][0]["image"] == str(tmp_path / "lung" / "img.nii.gz")
    assert brain["validation"][0]["image"] == [str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]
    assert tasks_of(data) == [
        {"name": "lung_ct", "in_channels": 1, "classes": ["lungs", "vessels", "nodules"], "kind": "softmax"},
        {"name": "brain_mri", "in_channels": 2, "classes": ["tissue", "lesion"], "kind": "regions",
         "regions": [[1, 2], [2]]},
    ]
    with pytest.raises(InputError, match=r"datasets.lung_ct.training\[0\]: the file .*img.nii.gz does not exist"):
        read_multi_datalist(path, check_files=True)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("datasets"), "non-empty object 'datasets'"),
    (lambda d: d["datasets"].update({"bad.id": d["datasets"]["lung_ct"]}), "datasets.bad.id: a data set id"),
    (lambda d: d["datasets"]["lung_ct"].update(classes=[]), "datasets.lung_ct.classes: expected a non-empty"),
    (lambda d: d["datasets"]["lung_ct"].pop("modality"), "datasets.lung_ct.modality: expected one name"),
    (lambda d: d["datasets"]["lung_ct"].update(kind="sigmoid"), "datasets.lung_ct.kind: expected one of"),
    (lambda d: d["datasets"]["lung_ct"].update(labels=[1]), r"datasets.lung_ct: unknown key\(s\) \['labels'\]"),
    (lambda d: d["datasets"]["lung_ct"].update(training=[]), "datasets.lung_ct.training: expected a non-empty"),
    (lambda d: d["datasets"]["brain_mri"]["training"][0].update(image="one.nii.gz"),
     r"datasets.brain_mri.training\[0\].image: expected 2 path\(s\)"),
    (lambda d: d["datasets"]["brain_mri"]["training"][0].pop("label"),
     r"datasets.brain_mri.training\[0\]: expected an object with 'image' and 'label'"),
    (lambda d: d["datasets"]["brain_mri"].update(regions=[[3]]), "datasets.brain_mri.regions: needs kind"),
    (lambda d: d["datasets"]["lung_ct"].update(regions=[[1]]), "datasets.lung_ct.regions: needs kind 'regions'"),
])
def test_errors_name_the_file_the_data_set_and_the_entry(tmp_path, change, message):
    data = {"datasets": collection(tmp_path)}
    change(data)
    path = tmp_path / "multi.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message) as raised:
        read_multi_datalist(path)
    assert raised.value.source == str(path) and "\n" not in str(raised.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_multi_datalist(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="not a readable JSON"):
        read_multi_datalist(tmp_path / "broken.json")
    with pytest.raises(InputError, match="lung_ct.classes"):
        write_multi_datalist(tmp_path / "bad.json", {"lung_ct": {**collection(tmp_path)["lung_ct"], "classes": "x"}})
    assert not (tmp_path / "bad.json").exists()
