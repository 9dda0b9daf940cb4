"""Reconstructing a masked scan for inspection."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from torch import nn

from shared.io.errors import InputError
from shared.io.images import save_nifti
from shared.ssl.inspection import plan_from_manifest, reconstruct_scans

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


def test_plan_from_manifest(tmp_path):
    (tmp_path / "encoder.json").write_text(json.dumps({"modality": "CT", "in_channels": 2, "spacing": [1, 1, 2]}))
    plan = plan_from_manifest(tmp_path)
    assert plan["target_spacing"] == [1, 1, 2] and len(plan["channels"]) == 2
    assert all(channel["per_image"] for channel in plan["channels"])
    with pytest.raises(InputError, match="pre-train first"):
        plan_from_manifest(tmp_path / "missing")
