from pathlib import Path

import pytest

from shared.data.cache import CASE_PREFIX, case_files
from shared.data.validate import case_id
from shared.engines.inference import predict_scans

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
