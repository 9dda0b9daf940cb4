"""A bundle packed for the Model Zoo (``tools.package_bundle``), downloaded with ``python -m monai.bundle
download --url file://...`` into a fresh folder and run from there, with the project's code from the
wheel the zip carries; ``monai.bundle.load()`` loads every tensor of the shipped weights.

The weights are a tiny Retina U-Net (plain encoder, tiny preset: not the configs' paper network, as a
quick-preset model is not) shipped in half precision with its ``model_plan.json``. The data: one
embedded lung scan (40 x 40 x 24 voxels). The fresh-virtual-environment run needs wheels of every
declared package on disk (see :func:`local_wheel_folders`) and installs torch, so it is marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from shared.bundles import build_network
from shared.bundles.packaging import PROJECT_DISTRIBUTION, build_wheel, declared_packages, package_bundle
from shared.bundles.shipping import ship_weights
from shared.data.synthetic.dataset import make_dataset
from shared.io.errors import InputError

REPOSITORY = Path(__file__).resolve().parents[2]
BUNDLE = "retina_unet_detection"
NETWORK = {"target": "shared.networks.retina_unet.RetinaUNetNetwork",
           "arguments": {"in_channels": 1, "num_classes": 2, "encoder": {"name": "plain", "preset": "tiny"},
                         "decoder_channels": 16, "detection_strides": [4, 8], "segmentation_classes": "foreground"}}
PLAN = {"plan": {"target_spacing": [2.0, 2.0, 2.0], "channels": [{"modality": "CT", "clip": [-1000.0, 400.0],
                                                                     "mean": -400.0, "std": 400.0}],
                 "classes": ["benign", "malignant"], "num_classes": 2},
        "class_names": ["benign", "malignant"], "patch_size": [32, 32, 32], "detection_strides": [4, 8],
        "detector": {"anchor_sizes": [[2.0, 3.0, 4.0]] * 3}, "network": NETWORK}  # anchor sizes per axis
# loads the downloaded bundle as a Zoo user does, and compares every tensor with the shipped file
LOAD_CHECK = """
import sys, torch, monai.bundle
model = monai.bundle.load(sys.argv[1], bundle_dir=sys.argv[2], device="cpu", progress=False)
shipped = torch.load(sys.argv[2] + "/" + sys.argv[1] + "/models/model.pt", weights_only=True)
state = model.state_dict()
assert set(state) == set(shipped), (len(state), len(shipped))
different = [key for key in state if not torch.equal(state[key], shipped[key].to(state[key].dtype))]
assert not different, different[:5]
print("loaded", len(state), "of", len(shipped), "tensors")
"""


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> dict[str, Path]:
    """The zip of a bundle copy shipping tiny half-precision weights, the wheel, and one embedded scan."""
    root = tmp_path_factory.mktemp("zoo")
    counts = {"training": 0, "validation": 0, "test": 1, "unlabelled": 0}
    make_dataset("lung_ct", root / "data", counts=counts, shape=(40, 40, 24), previews=False, progress=False)
    torch.manual_seed(0)
    network = build_network(NETWORK["target"], **NETWORK["arguments"])
    (root / "run").mkdir()
    torch.save(network.state_dict(), root / "run" / "model.pt")
    (root / "run" / "model_plan.json").write_text(json.dumps(PLAN))
    bundle = root / "source" / BUNDLE
    shutil.copytree(REPOSITORY / "bundles" / BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "__pycache__"))
    ship_weights(bundle, root / "run" / "model.pt", half=True)
    ship_weights(bundle, root / "run" / "model_plan.json")
    wheel = build_wheel(root / "wheel")
    archive = package_bundle(bundle, root / "dist", version="9.9.9", changelog="tiny test weights", wheel=wheel)
    return {"root": root, "zip": archive, "wheel": wheel, "bundle": bundle}


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None, expect_failure: bool = False,
         timeout: int = 1200) -> subprocess.CompletedProcess:  # generous: the shared cores can be slow
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update({"OMP_NUM_THREADS": "1", **(env or {})})
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
    assert (result.returncode != 0) == expect_failure, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _download_and_run(python: str, packed: dict[str, Path], work: Path, env: dict[str, str]) -> Path:
    """Download the zip into ``work/bundles``, run its inference config on the embedded scan, then load it."""
    fresh = work / "bundles"
    _run([python, "-m", "monai.bundle", "download", "--name", BUNDLE, "--url", packed["zip"].as_uri(),
          "--bundle_dir", str(fresh), "--progress", "False"], cwd=work, env=env)
    downloaded = fresh / BUNDLE
    assert (downloaded / packed["wheel"].name).is_file() and (downloaded / "models" / "model.pt").is_file()
    _run([python, "-m", "monai.bundle", "run", "--config_file", str(downloaded / "configs" / "inference.json"),
          "--dataset_dir", str(packed["root"] / "data"), "--inference#mirror", "False"], cwd=work, env=env)
    predictions = json.loads((work / "runs" / BUNDLE / "predictions" / "predictions.json").read_text())
    assert [Path(entry["image"]).name for entry in predictions] == ["lung_ct_ts_000_0000.nii.gz"]
    assert "box" in predictions[0] and "label_scores" in predictions[0]
    loaded = _run([python, "-c", LOAD_CHECK, BUNDLE, str(fresh)], cwd=work, env=env)
    assert re.search(r"loaded (\d+) of \1 tensors", loaded.stdout), loaded.stdout
    return downloaded


def test_the_zip_has_the_zoo_layout_and_the_packed_metadata(packed):
    with zipfile.ZipFile(packed["zip"]) as archive:
        names = set(archive.namelist())
        metadata = json.loads(archive.read(f"{BUNDLE}/configs/metadata.json"))
        readme = archive.read(f"{BUNDLE}/docs/README.md").decode()
        train = json.loads(archive.read(f"{BUNDLE}/configs/train.json"))
    assert packed["zip"].name == f"{BUNDLE}_v9.9.9.zip"
    assert {f"{BUNDLE}/LICENSE", f"{BUNDLE}/configs/inference.json", f"{BUNDLE}/models/model.pt",
            f"{BUNDLE}/models/model_plan.json", f"{BUNDLE}/docs/data_license.txt", f"{BUNDLE}/large_files.yml",
            f"{BUNDLE}/{packed['wheel'].name}"} <= names
    assert metadata["version"] == "9.9.9" and metadata["changelog"]["9.9.9"] == "tiny test weights"
    assert list(metadata["changelog"])[0] == "9.9.9"
    source = json.loads((REPOSITORY / "bundles" / BUNDLE / "configs" / "metadata.json").read_text())
    assert source["version"] != "9.9.9"  # only the packed copy changes
    assert f"pip install {BUNDLE}/{packed['wheel'].name} torch==2.13.0 monai==1.6.1" in readme
    # the packed train.json (what monai.bundle.load builds by default) describes the shipped network
    assert train["encoder"] == train["planned_encoder"] == {"name": "plain", "preset": "tiny"}
    assert train["decoder_channels"] == 16 and train["detection_strides"] == [4, 8]


def test_declared_packages_are_pip_installable_names(tmp_path):
    metadata = json.loads((REPOSITORY / "bundles" / BUNDLE / "configs" / "metadata.json").read_text())
    packages = declared_packages(metadata, tmp_path / "metadata.json")
    assert packages[PROJECT_DISTRIBUTION] and "shared" not in packages
    for key in ("required_packages_version", "optional_packages_version"):
        metadata[key] = {**metadata[key], "shared": "0.1.0"}
    with pytest.raises(InputError, match="'shared', which pip cannot install"):
        declared_packages(metadata, tmp_path / "metadata.json")


def test_a_bundle_whose_configs_would_load_its_weights_in_part_is_refused(packed, tmp_path):
    # quick-preset-like weights without the plan that says which network they are: the configs build
    # the paper network, which monai.bundle.load() would fill only in part
    bundle = tmp_path / BUNDLE
    shutil.copytree(packed["bundle"], bundle)
    (bundle / "models" / "model_plan.json").unlink()
    with pytest.raises(InputError, match=r"train.json: network_def builds a network that would load \d+ of its "
                                         r"\d+ tensors from model.pt"):
        package_bundle(bundle, tmp_path / "dist", wheel=packed["wheel"])
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_a_shipped_file_with_another_sha256_is_refused(packed, tmp_path):
    bundle = tmp_path / BUNDLE
    shutil.copytree(packed["bundle"], bundle)
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    torch.save({key: value + 1 if value.is_floating_point() else value for key, value in state.items()},
               bundle / "models" / "model.pt")
    with pytest.raises(InputError, match="differs from .* lists for this shipped file"):
        package_bundle(bundle, tmp_path / "dist", wheel=packed["wheel"])
    # and at inference: one line, exit status 2
    work = tmp_path / "work"
    work.mkdir()
    result = _run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                   str(bundle / "configs" / "inference.json"), "--dataset_dir", str(packed["root"] / "data")],
                  cwd=work, env={"PYTHONPATH": str(REPOSITORY)}, expect_failure=True)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "lists for this shipped file" in error_lines[0], result.stderr[-2000:]


def test_downloaded_with_monai_and_run_with_the_code_of_its_wheel(packed, tmp_path):
    # the project's code only from the wheel in the zip (installed into a folder of its own)
    work = tmp_path / "work"
    work.mkdir()
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
          str(packed["wheel"])], cwd=work)
    env = {"PYTHONPATH": str(site)}
    where = _run([sys.executable, "-c", "import shared; print(shared.__file__)"], cwd=work, env=env)
    assert where.stdout.strip().startswith(str(site)), where.stdout
    _download_and_run(sys.executable, packed, work, env)


def local_wheel_folders() -> list[Path]:
    """Folders of wheels on this machine: ``MISSING_PIECE_WHEELHOUSE`` (``os.pathsep``-separated) and pip's
    configured ``find-links``/file indexes (``/opt/wheels`` holds torch 2.13.0+cpu here)."""
    folders = [Path(item) for item in os.environ.get("MISSING_PIECE_WHEELHOUSE", "").split(os.pathsep) if item]
    result = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        if "find-links" in line or "index-url" in line:
            for item in line.split("=", 1)[1].strip("'\" ").split():
                path = Path(item.removeprefix("file://"))
                folders.append(path.parent / "files" if path.name == "simple" else path)  # a file index: ../files
    return [folder for folder in dict.fromkeys(folders) if folder.is_dir()]


@pytest.mark.slow
def test_in_a_fresh_virtual_environment_with_only_what_the_bundle_declares(packed, tmp_path):
    readme = zipfile.ZipFile(packed["zip"]).read(f"{BUNDLE}/docs/README.md").decode()
    line = next(text for text in readme.splitlines() if text.startswith("pip install "))
    requirements = line.split()[3:]
    folders = local_wheel_folders()
    links = [argument for folder in folders for argument in ("--find-links", str(folder))]
    venv = tmp_path / "venv"
    started = time.monotonic()
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    installed = subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", *links, str(packed["wheel"]),
                                *requirements], capture_output=True, text=True, timeout=900)
    if installed.returncode != 0 and "No matching distribution" in installed.stderr:
        pytest.skip("a declared package has no wheel on this machine: put them in a folder (pip download -d DIR "
                    f"{' '.join(requirements)}) and name it in MISSING_PIECE_WHEELHOUSE; {installed.stderr[-300:]}")
    assert installed.returncode == 0, installed.stderr[-3000:]
    print(f"fresh environment installed in {time.monotonic() - started:.0f} s")
    work = tmp_path / "work"
    work.mkdir()
    _download_and_run(python, packed, work, {"PYTHONNOUSERSITE": "1"})
