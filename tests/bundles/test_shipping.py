"""Shipping small weights in a bundle (``tools.ship_weights``): copied, listed with their sha256, half
precision on disk loading back into float32 networks, an encoder manifest kept consistent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from shared.bundles import build_network
from shared.bundles.shipping import ship_weights
from shared.checkpoints.large_files import PLACEHOLDER_HASH, read_large_files
from shared.checkpoints.manifest import export_encoder, read_manifest_encoder
from shared.checkpoints.safe_load import read_checkpoint, sha256_file
from shared.checkpoints.weights import load_weights
from shared.encoders.presets import build_encoder
from shared.io.errors import InputError
from tools.ship_weights import ship

REPOSITORY = Path(__file__).resolve().parents[2]
TINY = {"name": "plain", "preset": "tiny"}
HALF_TOLERANCE = 5e-3  # largest output difference, relative to the largest output (measured: 6.6e-4)


def _copy(bundle: str, tmp_path: Path) -> Path:
    copy = tmp_path / bundle
    shutil.copytree(REPOSITORY / "bundles" / bundle, copy, ignore=shutil.ignore_patterns("models", "__pycache__"))
    return copy


def _tiny_detector() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("shared.networks.retina_unet.RetinaUNetNetwork", in_channels=1, num_classes=2,
                         encoder=TINY, decoder_channels=16, detection_strides=[4, 8])


def _listed(bundle: Path) -> dict[str, dict]:
    return {entry["path"]: entry for entry in read_large_files(bundle)}


def test_a_half_precision_model_loads_into_float32_and_gives_the_same_outputs(tmp_path):
    bundle = _copy("retina_unet_detection", tmp_path)
    plan_entry = _listed(bundle)["models/model_plan.json"]
    network = _tiny_detector().eval()
    torch.save(network.state_dict(), tmp_path / "model.pt")
    shipped = ship(str(bundle), str(tmp_path / "model.pt"), half=True)
    assert shipped == [str(bundle / "models" / "model.pt")]
    on_disk = read_checkpoint(bundle / "models" / "model.pt")
    assert {value.dtype for value in on_disk.values() if value.is_floating_point()} == {torch.float16}
    assert (bundle / "models" / "model.pt").stat().st_size < 0.6 * (tmp_path / "model.pt").stat().st_size
    entry = _listed(bundle)["models/model.pt"]
    assert entry["hash_val"] == sha256_file(bundle / "models" / "model.pt")
    assert entry["url"] == "bundles/retina_unet_detection/models/model.pt"
    assert _listed(bundle)["models/model_plan.json"] == plan_entry  # not shipped in this call: kept as it was
    loaded = load_weights(_tiny_detector(), bundle / "models" / "model.pt").eval()
    assert all(value.dtype == torch.float32 for value in loaded.state_dict().values() if value.is_floating_point())
    image = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference, restored = network(image), loaded(image)
    flat_reference = torch.cat([t.flatten() for t in torch.utils._pytree.tree_leaves(reference)])
    flat_restored = torch.cat([t.flatten() for t in torch.utils._pytree.tree_leaves(restored)])
    error = (flat_reference - flat_restored).abs().max() / flat_reference.abs().max()
    assert 0 < error < HALF_TOLERANCE, float(error)


def test_an_encoder_manifest_ships_with_its_weights_and_stays_consistent(tmp_path):
    bundle = _copy("resenc_mae_pretrain", tmp_path)
    manifest = export_encoder(build_encoder({"name": "resenc", "preset": "tiny"}, 1), tmp_path / "run",
                              architecture={"name": "resenc", "preset": "tiny"}, in_channels=1, modality="CT",
                              spacing=[1.5, 1.5, 1.5], normalization="ct", method="mae")
    shipped = ship_weights(bundle, manifest)
    assert shipped == [bundle / "models" / "encoder.pt", bundle / "models" / "encoder.json"]
    listed = _listed(bundle)
    for name in ("encoder.pt", "encoder.json"):
        assert listed[f"models/{name}"]["hash_val"] == sha256_file(bundle / "models" / name)
    assert listed["models/model.pt"]["hash_val"] == PLACEHOLDER_HASH
    assert read_manifest_encoder(bundle / "models" / "encoder.json").manifest["method"] == "mae"
    # the weights alone, now in half precision: the shipped manifest records their new sha256
    ship_weights(bundle, tmp_path / "run" / "encoder.pt", half=True)
    recorded = json.loads((bundle / "models" / "encoder.json").read_text())["weights"]
    assert recorded["sha256"] == sha256_file(bundle / "models" / "encoder.pt") == _listed(bundle)[
        "models/encoder.pt"]["hash_val"]
    assert _listed(bundle)["models/encoder.json"]["hash_val"] == sha256_file(bundle / "models" / "encoder.json")
    encoder = read_manifest_encoder(bundle / "models" / "encoder.json")
    assert encoder.state_dict and all(value.dtype == torch.float16 for value in encoder.state_dict.values()
                                      if value.is_floating_point())
    # released elsewhere: the weights are listed beside the manifest's URL
    ship_weights(bundle, manifest, url="https://releases.example/v1/encoder.json")
    assert _listed(bundle)["models/encoder.pt"]["url"] == "https://releases.example/v1/encoder.pt"
    assert _listed(bundle)["models/encoder.json"]["url"] == "https://releases.example/v1/encoder.json"


def test_the_tool_refuses_what_it_cannot_ship(tmp_path):
    bundle = _copy("retina_unet_detection", tmp_path)
    (tmp_path / "model_plan.json").write_text("{}")
    with pytest.raises(InputError, match="models/<name>"):
        ship(str(bundle), str(tmp_path / "model_plan.json"), **{"as": "configs/model_plan.json"})
    with pytest.raises(InputError, match="--half applies to weight files"):
        ship(str(bundle), str(tmp_path / "model_plan.json"), half=True)
    with pytest.raises(InputError, match="unknown option"):
        ship(str(bundle), str(tmp_path / "model_plan.json"), ass="models/x.json")
    with pytest.raises(InputError, match="neither a bundle folder nor a bundle name"):
        ship("no_such_bundle", str(tmp_path / "model_plan.json"))
    assert ship(str(bundle), str(tmp_path / "model_plan.json"), **{"as": "models/plan.json"}) == [
        str(bundle / "models" / "plan.json")]
