import json

import numpy as np
import pytest

from shared.boxes.convention import boxes_world_to_voxel, points_voxel_to_world
from shared.io.datalist import read_datalist
from shared.io.errors import InputError
from shared.io.images import load_volume
from shared.io.luna16 import export_luna16_candidates, import_luna16, read_annotations

UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.105756658031515062000744821260"


def _write_mhd(folder, uid, array_zyx, spacing=(0.7, 0.7, 2.5), origin=(-180.0, -170.0, -300.0)):
    """A MetaImage header + raw payload written by hand, as LUNA16 ships them (LPS origin, x fastest)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{uid}.raw").write_bytes(np.ascontiguousarray(array_zyx, dtype="<i2").tobytes())
    z, y, x = array_zyx.shape
    (folder / f"{uid}.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = False\n"
        "TransformMatrix = 1 0 0 0 1 0 0 0 1\n"
        f"Offset = {origin[0]} {origin[1]} {origin[2]}\nCenterOfRotation = 0 0 0\nAnatomicalOrientation = RAI\n"
        f"ElementSpacing = {spacing[0]} {spacing[1]} {spacing[2]}\nDimSize = {x} {y} {z}\n"
        f"ElementType = MET_SHORT\nElementDataFile = {uid}.raw\n")
    return folder / f"{uid}.mhd"


def test_import_hand_written_mhd(tmp_path):
    array = np.full((8, 12, 10), -1000, np.int16)
    array[3, 5, 4] = 500  # z, y, x
    _write_mhd(tmp_path / "subset0", UID, array)
    _write_mhd(tmp_path / "subset1", "1.2.3", np.zeros((4, 4, 4), np.int16))
    # the world (LPS) centre of voxel x=4, y=5, z=3: origin + index * spacing
    centre = (-180.0 + 4 * 0.7, -170.0 + 5 * 0.7, -300.0 + 3 * 2.5)
    (tmp_path / "annotations.csv").write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
        f"{UID},{centre[0]},{centre[1]},{centre[2]},2.1\n9.9.9,0,0,0,5\n")
    with pytest.warns(UserWarning, match="1 annotated"):
        import_luna16(tmp_path / "annotations.csv", tmp_path, tmp_path / "luna.json", validation_fraction=0.0)
    datalist = read_datalist(tmp_path / "luna.json")
    assert datalist["classes"] == ["nodule"] and len(datalist["training"]) == 2
    entry = next(e for e in datalist["training"] if e["box"])
    assert entry["label"] == [0] and entry["box"] == [[*centre, 2.1, 2.1, 2.1]]
    volume = load_volume(entry["image"])
    assert volume.array.shape == (1, 10, 12, 8)
    # the box sits on the bright voxel: x 4, y 5, z 3, 3 voxels wide in x and y (2.1 / 0.7)
    voxel = boxes_world_to_voxel(entry["box"], volume.affine)[0]
    np.testing.assert_allclose((voxel[:3] + voxel[3:]) / 2, [4.5, 5.5, 3.5], atol=1e-4)
    np.testing.assert_allclose(voxel[3:] - voxel[:3], [3, 3, 2.1 / 2.5], atol=1e-4)
    assert volume.array[0, 4, 5, 3] == 500
    np.testing.assert_allclose(points_voxel_to_world(np.array([[4, 5, 3]]), volume.affine)[0], centre, atol=1e-4)


def test_candidates_csv(tmp_path):
    predictions = [{"image": f"/data/subset0/{UID}.mhd", "box": [[1.5, -2.25, 3.0, 4, 4, 4], [0, 0, 0, 1, 1, 1]],
                    "label": [0, 0], "label_scores": [0.9, 0.125]},
                   {"image": "other_0000.nii.gz", "box": [], "label": [], "label_scores": []}]
    (tmp_path / "p.json").write_text(json.dumps({"validation": predictions}))
    export_luna16_candidates(tmp_path / "p.json", tmp_path / "c.csv")
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert lines == ["seriesuid,coordX,coordY,coordZ,probability",
                     f"{UID},1.5000,-2.2500,3.0000,0.900000", f"{UID},0.0000,0.0000,0.0000,0.125000"]


def test_candidates_of_a_dicom_series_carry_its_series_instance_uid(tmp_path, rng):
    from tests.io.test_images import write_dicom_series

    uid = write_dicom_series(tmp_path / "patient_7", rng.integers(0, 300, size=(8, 6, 5)).astype(np.int16))
    predictions = [{"image": str(tmp_path / "patient_7"), "box": [[1, 2, 3, 4, 4, 4]], "label": [0],
                    "label_scores": [0.5]}]
    (tmp_path / "p.json").write_text(json.dumps(predictions))
    export_luna16_candidates(tmp_path / "p.json", tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_text().splitlines()[1] == f"{uid},1.0000,2.0000,3.0000,0.500000"


def test_bad_inputs(tmp_path):
    _write_mhd(tmp_path, UID, np.zeros((4, 4, 4), np.int16))
    (tmp_path / "a.csv").write_text("seriesuid,coordX,coordY\n1,2,3\n")
    with pytest.raises(InputError, match="missing columns"):
        import_luna16(tmp_path / "a.csv", tmp_path, tmp_path / "d.json")
    (tmp_path / "a.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1,2,3,4,-1\n")
    with pytest.raises(InputError, match="line 2"):
        import_luna16(tmp_path / "a.csv", tmp_path, tmp_path / "d.json")
    with pytest.raises(InputError, match="no .mhd"):
        import_luna16(tmp_path / "a.csv", tmp_path / "empty", tmp_path / "d.json")
    (tmp_path / "p.json").write_text('[{"image": "a", "box": [[0,0,0,1,1,1]], "label_scores": []}]')
    with pytest.raises(InputError, match="entry 0"):
        export_luna16_candidates(tmp_path / "p.json", tmp_path / "c.csv")
    assert not (tmp_path / "d.json").exists() and not (tmp_path / "c.csv").exists()


def test_rows_and_entries_that_cannot_be_read_name_the_file_and_the_row(tmp_path):
    (tmp_path / "a.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1,2,3,4,5\n1,2,3,4\n")
    with pytest.raises(InputError, match=r"a.csv: line 3: no diameter_mm"):
        read_annotations(tmp_path / "a.csv")
    (tmp_path / "bin.json").write_bytes(bytes(range(128, 256)))
    with pytest.raises(InputError, match=r"bin.json: not a readable predictions JSON"):
        export_luna16_candidates(tmp_path / "bin.json", tmp_path / "c.csv")
    for entry, message in [("text", "entry 0 must be an object"),
                           ({"image": "a", "box": [[0, 0, 0, 1, 1, 1]], "label_scores": ["high"]},
                            r"entry 0 \(image a\): score 'high' is not a number"),
                           ({"image": "a", "box": [[0, 0]], "label_scores": [0.5]},
                            r"entry 0 \(image a\): box \[0, 0\] is not \[cx, cy, cz, w, h, d\]")]:
        (tmp_path / "p.json").write_text(json.dumps([entry]))
        with pytest.raises(InputError, match=message):
            export_luna16_candidates(tmp_path / "p.json", tmp_path / "c.csv")
    assert not (tmp_path / "d.json").exists() and not (tmp_path / "c.csv").exists()
