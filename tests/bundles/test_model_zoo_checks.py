"""The MONAI Model Zoo's CI checks, applied to our bundles offline (docs/model_zoo.md lists them).

The Zoo runs ``ci/verify_bundle.py`` (``min``: large files, required files, version and changelog,
metadata against the schema; ``full`` adds ``verify_net_in_out`` with ``n=1`` and ``ckpt_export``) and
its pre-commit hooks (``pretty-format-json --no-sort-keys --indent=4``, end of file, trailing
whitespace, YAML, files under 1 MB, ...). The same checks run here with MONAI's own functions, on a copy
of each bundle laid out as in the Zoo (``models/<bundle>``) whose ``large_files.yml`` points at local
weights ("given reachable weights": ours are not published). The exceptions the Zoo grants, and which
we take, are the ones docs/model_zoo.md names: detectors return a dict, so ``verify_net_in_out`` runs
with ``network_def#dense_output`` (the Zoo skips the check for ``lung_nodule_ct_detection``), and the
TorchScript export is traced, not scripted (the Zoo's ``exclude_verify_torchscript_list``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
import yaml
from monai.apps.utils import download_url
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from shared.bundles import SCHEMA_PATH

REPOSITORY = Path(__file__).resolve().parents[2]
BUNDLES = ["retina_unet_detection", "resenc_retina_unet_detection", "deformable_detr_detection",
           "resenc_deformable_detr_detection", "resenc_mae_pretrain", "resenc_voco_pretrain", "resenc_spark_pretrain",
           "resenc_models_genesis_pretrain", "resenc_multitalent_pretrain", "retina_unet_multitalent_pretrain"]
FULL_MODE = BUNDLES
# Full mode builds the paper-size network (30-50 s each on 2 cores): by default it runs on one bundle per
# network family; the others' networks are the same encoders (or their in/out is checked at quick size by
# their own bundle tests), and `pytest -m slow` runs them all.
FULL_MODE_SLOW = ("retina_unet_detection", "deformable_detr_detection", "resenc_mae_pretrain", "resenc_voco_pretrain",
                  "resenc_models_genesis_pretrain", "retina_unet_multitalent_pretrain")
# a MultiTalent network has a stem and a head block per data set: its inference.json builds it from the data
# sets its export lists (models/encoder.json), here those of the embedded collection
MULTITALENT_DATASETS = {
    "lung_ct": {"in_channels": 1, "classes": ["lungs", "vessels", "nodules"], "kind": "softmax"},
    "brain_mri": {"in_channels": 2, "classes": ["CSF", "grey matter", "white matter", "lesions"], "kind": "softmax"},
    "chest_ct": {"in_channels": 1, "classes": ["heart and great vessels", "bone"], "kind": "softmax"},
}
DETECTORS = ("retina_unet_detection", "resenc_retina_unet_detection", "deformable_detr_detection",
             "resenc_deformable_detr_detection")
MAX_KB = 1024  # check-added-large-files --maxkb=1024
PRIVATE_KEY_MARKERS = ("BEGIN RSA PRIVATE KEY", "BEGIN DSA PRIVATE KEY", "BEGIN EC PRIVATE KEY",
                       "BEGIN OPENSSH PRIVATE KEY", "BEGIN PRIVATE KEY", "PuTTY-User-Key-File-2")


def _committed_files(bundle: str) -> list[Path]:
    root = REPOSITORY / "bundles" / bundle
    return sorted(path for path in root.rglob("*") if path.is_file() and "__pycache__" not in path.parts
                  and "models" not in path.relative_to(root).parts)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_pre_commit_hooks_would_change_nothing(bundle):
    for path in [*_committed_files(bundle), SCHEMA_PATH]:
        raw = path.read_bytes()
        assert len(raw) <= MAX_KB * 1024, f"{path}: over {MAX_KB} KB"
        text = raw.decode("utf-8")
        assert "\r" not in text, f"{path}: CR line endings"
        assert text.endswith("\n") and not text.endswith("\n\n"), f"{path}: must end with exactly one newline"
        assert not [n for n, line in enumerate(text.split("\n"), 1) if line != line.rstrip()], \
            f"{path}: trailing whitespace"
        assert not any(marker in text for marker in PRIVATE_KEY_MARKERS), f"{path}: private key"
        if path.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
            assert text.startswith("#!"), f"{path}: executable without a shebang"
        if path.suffix == ".json":
            assert json.dumps(json.loads(text), indent=4) + "\n" == text, f"{path}: pretty-format-json would rewrite it"
        if path.suffix in (".yml", ".yaml"):
            yaml.safe_load(text)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_bundle_min_mode_checks(bundle):
    root = REPOSITORY / "bundles" / bundle
    for necessary in ("configs/metadata.json", "LICENSE", "configs/inference.json"):
        assert (root / necessary).is_file(), necessary
    # the preferred models/model.pt comes from large_files.yml (the Zoo downloads it first)
    large_files = yaml.safe_load((root / "large_files.yml").read_text())["large_files"]
    assert "models/model.pt" in [entry["path"] for entry in large_files]
    for entry in large_files:
        assert set(entry) >= {"path", "url", "hash_val", "hash_type"}, entry
    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    assert metadata["version"] in metadata["changelog"]
    verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(SCHEMA_PATH))
    # MONAI reads optional_packages_version as the old name of required_packages_version and replaces
    # one by the other: equal dicts keep the requirements whatever reads them
    assert metadata["optional_packages_version"] == metadata["required_packages_version"]


def test_the_schema_requires_optional_packages_version(tmp_path):
    metadata = json.loads((REPOSITORY / "bundles" / BUNDLES[0] / "configs" / "metadata.json").read_text())
    del metadata["optional_packages_version"]
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA_PATH))


def _zoo_copy(bundle: str, folder: Path) -> Path:
    """``folder/models/<bundle>`` with weights of its inference ``network_def`` served from ``folder/serve``."""
    root = folder / "models" / bundle
    shutil.copytree(REPOSITORY / "bundles" / bundle, root, ignore=shutil.ignore_patterns("models", "__pycache__"))
    serve = folder / "serve"
    serve.mkdir()
    if "multitalent" in bundle:  # the export the network is built from, downloaded like the weights
        (root / "models").mkdir()
        for where in (serve, root / "models"):
            (where / "encoder.json").write_text(json.dumps({"data": {"datasets": MULTITALENT_DATASETS}}))
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["bundle_root"] = str(root)
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), serve / "model.pt")
    spec = getattr(network, "network_spec", None)  # detectors: the plan records the network
    entries = yaml.safe_load((root / "large_files.yml").read_text())["large_files"]
    for entry in entries:
        served = serve / Path(entry["path"]).name
        if not served.exists():  # the plan (detectors) or the exported encoder (pre-training): a stand-in
            served.write_text(json.dumps({"network": spec} if spec else {}))
        entry.update(url=served.as_uri(), hash_val=hashlib.sha256(served.read_bytes()).hexdigest())
    (root / "large_files.yml").write_text(yaml.safe_dump({"large_files": entries}))
    return root


@pytest.mark.parametrize("bundle", [pytest.param(bundle, marks=[pytest.mark.slow] if bundle in FULL_MODE_SLOW else [])
                                    for bundle in FULL_MODE])
def test_verify_bundle_full_mode_checks_with_reachable_weights(bundle, tmp_path, monkeypatch):
    root = _zoo_copy(bundle, tmp_path)
    # the Zoo's download_large_files: ConfigParser reads large_files.yml, download_url checks the hash
    parser = ConfigParser()
    parser.read_config(str(root / "large_files.yml"))
    for entry in parser.get()["large_files"]:
        entry = dict(entry)
        download_url(filepath=str(root / entry.pop("path")), fuzzy=True, **entry)
    assert (root / "models" / "model.pt").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the Zoo passes bundle_root; nothing may depend on the working folder
    common = {"meta_file": str(root / "configs" / "metadata.json"),
              "config_file": str(root / "configs" / "inference.json"), "bundle_root": str(root)}
    granted = {"network_def#dense_output": True} if bundle in DETECTORS else {}
    verify_net_in_out(net_id="network_def", device="cpu", **common, **granted)  # n=1, the Zoo's default
    exported = root / "models" / "verify_model.ts"
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(root / "models" / "model.pt"),
                use_trace=True, input_shape=[1, 1, 64, 64, 64], **common, **granted)
    torch.jit.load(str(exported))
    assert not list(elsewhere.iterdir()), "the checks wrote into the working folder"
