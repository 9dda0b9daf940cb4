import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from shared.data.cache import CASE_PREFIX, case_files
from shared.data.validate import case_id
from shared.boxes.convention import boxes_voxel_to_world
from shared.engines.inference import PredictionWriter, ScanEvaluator, predict_scans, single_case, write_box_map
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


class _FixedBoxesInferer:
    """One box per scan, in voxels of the preprocessed grid, scored by the case's index; records its networks."""

    def __init__(self, fail_on: int | None = None):
        self.calls, self.fail_on, self.networks = 0, fail_on, []

    def __call__(self, image, network):
        assert image.shape[:2] == (1, 1) and image.dtype == torch.float32
        self.networks.append(network)
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("broken scan")
        boxes = torch.tensor([[1.0, 2.0, 3.0, 5.0, 6.0, 7.0]])
        return {"boxes": boxes, "scores": torch.tensor([0.5 + 0.1 * self.calls]), "labels": torch.tensor([1])}


def _cases(folder: Path) -> list[dict]:
    cases = []
    for index, spacing in enumerate((1.0, 2.5)):
        affine = np.diag([spacing, spacing, 2 * spacing, 1.0])
        path = str(folder / f"case{index}.nii.gz")
        save_nifti(path, np.zeros((8, 8, 8), np.float32), affine)
        cases.append({"image": np.zeros((1, 8, 8, 8), np.float32), "affine": affine, "sources": [path]})
    return cases


def _evaluator(cases, inferer, handlers, networks=None):
    from monai.transforms import Compose
    from shared.data.transforms_geometry import BoxesVoxelToWorldd

    loader = torch.utils.data.DataLoader(cases, batch_size=1, collate_fn=single_case)
    networks = networks if networks is not None else torch.nn.Conv3d(1, 1, 1)
    return ScanEvaluator("cpu", loader, networks, inferer=inferer, postprocessing=Compose([BoxesVoxelToWorldd("boxes")]),
                         val_handlers=handlers)


def test_scan_evaluator_writes_world_boxes_of_every_scan(tmp_path):
    cases = _cases(tmp_path)
    inferer = _FixedBoxesInferer()
    ensemble = [torch.nn.Conv3d(1, 1, 1), torch.nn.Conv3d(1, 1, 1)]
    _evaluator(cases, inferer, [PredictionWriter(tmp_path / "out", write_box_maps=True)], ensemble).run()
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [entry["image"] for entry in written] == [case["sources"][0] for case in cases]
    for index, (entry, case) in enumerate(zip(written, cases)):
        expected = boxes_voxel_to_world(np.array([[1.0, 2.0, 3.0, 5.0, 6.0, 7.0]]), case["affine"])
        np.testing.assert_allclose(entry["box"], expected)
        assert entry["label"] == [1] and entry["label_scores"] == pytest.approx([0.6 + 0.1 * index])
        assert json.loads((tmp_path / "out" / f"case{index}.json").read_text()) == entry
        assert (tmp_path / "out" / f"case{index}_boxes.nii.gz").is_file()
    assert (tmp_path / "out" / "candidates.csv").read_text().count("\n") == 3  # header + one box per scan
    # the ensemble reaches the inferer as a list of its detectors
    assert all(isinstance(networks, list) and len(networks) == 2 for networks in inferer.networks)


def test_scan_evaluator_writes_nothing_when_a_scan_fails(tmp_path):
    with pytest.raises(RuntimeError, match="broken scan"):
        _evaluator(_cases(tmp_path), _FixedBoxesInferer(fail_on=2), [PredictionWriter(tmp_path / "out")]).run()
    assert not (tmp_path / "out").exists()
