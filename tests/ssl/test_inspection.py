"""Reconstructing a masked scan for inspection."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from shared.io.errors import InputError
from shared.io.images import save_nifti
from shared.engines.inference import ScanEvaluator, single_case
from shared.ssl.inspection import (MaskedReconstructionInferer, ReconstructionWriter, plan_from_manifest,
                                    reconstruct_scans)

PLAN = {"target_spacing": [1.0, 1.0, 1.0], "channels": [{"modality": "CT", "per_image": True}]}


def test_identity_network_scores_the_hidden_energy(tmp_path, rng):
    scan = str(save_nifti(tmp_path / "scan_0000.nii.gz", rng.normal(size=(8, 12, 8)).astype(np.float32), np.eye(4)))
    [result] = reconstruct_scans(nn.Identity(), [scan], tmp_path / "out", plan=PLAN, patch_size=[8, 8, 8],
                                 block_size=4, mask_ratio=0.5, seed=0)
    assert result["case"] == "scan"
    clean, masked, reconstruction = (np.asarray(nib.load(result["files"][name]).dataobj)
                                     for name in ("input", "masked", "reconstruction"))
    assert clean.shape == (8, 12, 8)
    hidden = (masked == 0) & (clean != 0)
    assert hidden.mean() == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(reconstruction, masked, atol=1e-6)  # identity gives back the masked input
    assert result["masked_mse"] == pytest.approx(float((clean[hidden] ** 2).mean()), rel=1e-4)
    assert json.loads((tmp_path / "out" / "reconstructions.json").read_text())[0]["case"] == "scan"


def test_inferer_pads_to_whole_blocks_and_crops_back(rng):
    scan = torch.from_numpy(rng.normal(size=(1, 2, 8, 10, 6)).astype(np.float32))
    inferer = MaskedReconstructionInferer([8, 8, 8], block_size=4, mask_ratio=0.5, seed=3)
    found = inferer(scan, nn.Identity())
    assert found["reconstruction"].shape == scan.shape and found["mask"].shape == (1, 1, 8, 10, 6)
    torch.testing.assert_close(found["input"], scan)
    torch.testing.assert_close(found["masked"], scan.masked_fill(found["mask"], 0.0))
    hidden = found["mask"].expand_as(scan)
    assert found["masked_mse"] == pytest.approx(float((scan[hidden] ** 2).mean()), rel=1e-5)
    # the mask is of whole 4³ blocks of the padded (8, 12, 8) grid: the first block row is uniform
    assert found["mask"][0, 0, :4, :4, :4].unique().numel() == 1
    again = MaskedReconstructionInferer([8, 8, 8], block_size=4, mask_ratio=0.5, seed=3)(scan, nn.Identity())
    assert torch.equal(again["mask"], found["mask"]), "one seed, one mask"
    with pytest.raises(ValueError, match="one scan"):
        inferer(scan[0], nn.Identity())


def test_evaluator_with_the_writer_gives_what_the_python_path_gives(tmp_path, rng):
    from monai.data import Dataset
    from torch.utils.data import DataLoader

    from shared.data.transforms_geometry import ResampleToSpacingd
    from shared.data.transforms_intensity import NormalizeChannelsd
    from shared.data.transforms_io import LoadVolumed
    from monai.transforms import Compose

    scans = [str(save_nifti(tmp_path / f"scan{index}_0000.nii.gz", rng.normal(size=(8, 12, 8)).astype(np.float32),
                            np.diag([2.0, 2.0, 2.0, 1.0]))) for index in range(2)]
    network = nn.Conv3d(1, 1, 3, padding=1)
    expected = reconstruct_scans(network, scans, tmp_path / "python", plan=PLAN, patch_size=[8, 8, 8], block_size=4,
                                 mask_ratio=0.5, seed=1)
    preprocessing = Compose([LoadVolumed("image"), ResampleToSpacingd(PLAN["target_spacing"]),
                             NormalizeChannelsd("image", channels=PLAN["channels"])])
    loader = DataLoader(Dataset([{"image": scan} for scan in scans], preprocessing), batch_size=1,
                        collate_fn=single_case)
    evaluator = ScanEvaluator("cpu", loader, network, inferer=MaskedReconstructionInferer(
        [8, 8, 8], block_size=4, mask_ratio=0.5, seed=1), val_handlers=[ReconstructionWriter(tmp_path / "engine")])
    evaluator.run()
    results = json.loads((tmp_path / "engine" / "reconstructions.json").read_text())
    assert [result["case"] for result in results] == ["scan0", "scan1"]
    assert [result["masked_mse"] for result in results] == pytest.approx([r["masked_mse"] for r in expected], rel=1e-5)
    for result, reference in zip(results, expected):
        for name in ("input", "masked", "reconstruction", "mask"):
            written, wanted = nib.load(result["files"][name]), nib.load(reference["files"][name])
            np.testing.assert_allclose(written.get_fdata(), wanted.get_fdata(), atol=1e-5)
            np.testing.assert_allclose(written.affine, wanted.affine)
        assert nib.load(result["files"]["input"]).shape == (16, 24, 16), "on the preprocessed 1 mm grid"


def test_plan_from_manifest(tmp_path):
    (tmp_path / "encoder.json").write_text(json.dumps({"modality": "CT", "in_channels": 2, "spacing": [1, 1, 2]}))
    plan = plan_from_manifest(tmp_path)
    assert plan["target_spacing"] == [1, 1, 2] and len(plan["channels"]) == 2
    assert all(channel["per_image"] for channel in plan["channels"])
    with pytest.raises(InputError, match="pre-train first"):
        plan_from_manifest(tmp_path / "missing")
