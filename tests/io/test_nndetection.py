import json

import numpy as np
import pytest

from tests._cases import write_dataset
from shared.io.datalist import read_datalist
from shared.io.errors import InputError
from shared.io.images import load_label_map, load_volume
from shared.io.nndetection import export_nndetection, import_nndetection


def _by_case(datalist):
    from shared.data.validate import case_id
    return {case_id(entry["image"]): entry for split in ("training", "validation") for entry in datalist.get(split, [])}


@pytest.mark.parametrize("with_mask", [True, False])
def test_export_import_round_trip(tmp_path, rng, with_mask):
    path = write_dataset(tmp_path / "ours", rng=rng, training=3, validation=1, channels=2, with_mask=with_mask,
                         objects=2)
    raw = export_nndetection(path, tmp_path / "Task001_Test")
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["modalities"] == {"0": "CT", "1": "CT"} and meta["labels"] == {"0": "benign", "1": "malignant"}
    assert meta["dim"] == 3 and (raw / "raw_splitted" / "imagesTr" / "case0_0001.nii.gz").exists()
    assert json.loads((raw / "raw_splitted" / "labelsTr" / "case0.json").read_text())["instances"].keys() == {"1", "2"}
    back = import_nndetection(raw, tmp_path / "back.json", validation_fraction=0.25, seed=1)
    assert len(back["training"]) == 3 and len(back["validation"]) == 1 and back["test"] == []
    original, imported = _by_case(read_datalist(path)), _by_case(read_datalist(tmp_path / "back.json"))
    assert original.keys() == imported.keys()
    for case, entry in original.items():
        other = imported[case]
        np.testing.assert_allclose(other["box"], entry["box"], atol=1e-4)
        assert other["label"] == entry["label"]
        np.testing.assert_array_equal(load_volume(other["image"]).array, load_volume(entry["image"]).array)
        if with_mask:
            np.testing.assert_array_equal(load_label_map(other["mask"]) > 0, load_label_map(entry["mask"]) > 0)


def test_import_errors(tmp_path, rng):
    with pytest.raises(InputError, match="imagesTr"):
        import_nndetection(tmp_path, tmp_path / "d.json")
    path = write_dataset(tmp_path / "ours", rng=rng, training=1, validation=0)
    raw = export_nndetection(path, tmp_path / "Task")
    labels = raw / "raw_splitted" / "labelsTr" / "case0.json"
    labels.write_text(json.dumps({"instances": {"1": 0}}))
    with pytest.raises(InputError, match=r"\[2\] of case0.nii.gz have no class") as caught:
        import_nndetection(raw, tmp_path / "d.json")
    assert caught.value.source == str(labels)
    labels.unlink()
    with pytest.raises(InputError, match="json of instance classes"):
        import_nndetection(raw, tmp_path / "d.json")
    (raw / "dataset.json").unlink()
    with pytest.raises(InputError, match="dataset.json"):
        import_nndetection(raw, tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists()


def test_export_validates_first(tmp_path, rng):
    path = write_dataset(tmp_path / "ours", rng=rng, training=2, validation=0)
    data = json.loads(path.read_text())
    data["training"][1]["image"] = "missing.nii.gz"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="missing.nii.gz"):
        export_nndetection(path, tmp_path / "Task")
    assert not (tmp_path / "Task").exists()
