import nibabel as nib
import numpy as np

from shared.data.cache import CASE_PREFIX, case_files
from shared.data.validate import case_id
from shared.boxes.convention import boxes_voxel_to_world
from shared.engines.inference import predict_scans, write_box_map
from shared.io.images import save_nifti
from tests._cases import spaced_affine

# File names where a per-module suffix list could disagree: dots in the stem, upper-case extensions, a
# channel suffix, MetaImage/NRRD headers, a DICOM series folder (named by its UID, trailing slash).
TRICKY_IMAGES = [
    "/data/a.b.nii.gz",
    "/data/scan.mhd",
    "/data/SCAN_0000.NII.GZ",
    "/data/volume.MHA",
    "/data/head.nrrd",
    "/data/head2.nhdr",
    "/data/plain.nii",
    "/data/LIDC-IDRI-0001/1.3.6.1.4.1.14519.5.2.1.6279.6001.1002/",
    ["/data/two_0000.nii.gz", "/data/two_0001.nii.gz"],
]


class _StubPredictor:
    """Returns one empty prediction per scan without reading it."""

    def predict_scan(self, image):
        return {"image": image, "box": [], "label": [], "label_scores": []}


def test_output_names_match_cache_ids(tmp_path):
    predict_scans(_StubPredictor(), TRICKY_IMAGES, tmp_path / "out", progress=False)
    written = sorted(path.stem for path in (tmp_path / "out").glob("*.json") if path.name != "predictions.json")
    # the cache names a case by the id validation gave it (CheckedCase.case → case_files)
    cached = sorted(case_files(tmp_path / "cache", case_id(image)).record.stem[len(CASE_PREFIX):]
                    for image in TRICKY_IMAGES)
    assert written == cached
    assert set(cached) == {"a.b", "scan", "SCAN", "volume", "head", "head2", "plain",
                           "1.3.6.1.4.1.14519.5.2.1.6279.6001.1002", "two"}


def test_box_map_paints_class_plus_one_on_the_scans_grid(tmp_path):
    affine = spaced_affine()
    save_nifti(tmp_path / "scan.nii.gz", np.zeros((8, 9, 10), np.float32), affine)
    voxel_boxes = np.array([[1, 1, 1, 4, 4, 4], [5, 5, 5, 7, 8, 9]], dtype=np.float64)
    entry = {"box": boxes_voxel_to_world(voxel_boxes, affine).tolist(), "label": [0, 2], "label_scores": [0.9, 0.5]}
    write_box_map(tmp_path / "boxes.nii.gz", entry, str(tmp_path / "scan.nii.gz"))
    painted = np.asarray(nib.load(tmp_path / "boxes.nii.gz").dataobj)
    expected = np.zeros((8, 9, 10), np.uint8)
    expected[1:4, 1:4, 1:4], expected[5:7, 5:8, 5:9] = 1, 3
    np.testing.assert_array_equal(painted, expected)
