"""A bundle packed for the MONAI Model Zoo: ``<name>_v<version>.zip`` holding ``<name>/`` with its
``configs/``, ``models/``, ``docs/``, ``LICENSE``, ``large_files.yml`` and the project's wheel.

``python -m monai.bundle download --name <name> --url file://<zip>`` unpacks it as ``<bundle_dir>/<name>``.
The bundle imports ``shared`` (this project), which no package index has: the zip carries the
project's wheel, and the packed README says how to install it with the packages ``metadata.json``
declares. The packed configs describe the weights the bundle ships: when ``models/model_plan.json``
records the network a shipped ``models/model.pt`` was trained as (a quick-preset model, say), the
nodes ``network_def`` reads are set to it in ``train.json`` and ``inference.json``, and packing is
refused unless both build a network that loads every tensor of ``model.pt`` (what
``monai.bundle.load()`` builds, from ``train.json`` by default).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from shared.checkpoints.large_files import MODELS_FOLDER, check_shipped_file, read_large_files
from shared.checkpoints.safe_load import read_checkpoint
from shared.io.errors import InputError

PACKED_ITEMS = ("configs", MODELS_FOLDER, "docs", "LICENSE", "large_files.yml")
LOAD_CONFIGS = ("train.json", "inference.json")  # monai.bundle.load's workflow_type "train" and "infer"
PROJECT_DISTRIBUTION = "missing-piece-detection"
IMPORT_NAMES = ("shared", "tools")  # this project's packages: importable only through its wheel
DECLARED_KEYS = ("required_packages_version", "optional_packages_version")
REQUIREMENT_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


def repository_root() -> Path:
    """The source checkout this ``shared`` package comes from (it holds ``pyproject.toml``)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise InputError(root, "no pyproject.toml: packaging builds the project's wheel from a source checkout")
    return root


def build_wheel(out_dir: str | os.PathLike) -> Path:
    """Builds the project's wheel into ``out_dir`` from a clean copy of the sources (no stale ``build/``).

    Returns:
        Path of the wheel.
    """
    root, out_dir = repository_root(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-source-") as source:
        ignored = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for name in ("shared", "tools"):
            shutil.copytree(root / name, Path(source) / name, ignore=ignored)
        for name in ("pyproject.toml", "LICENSE", "README.md"):
            if (root / name).is_file():
                shutil.copy(root / name, Path(source) / name)
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                 "--no-index", "-q", "-w", str(out_dir), source], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    wheels = sorted(out_dir.glob(f"{PROJECT_DISTRIBUTION.replace('-', '_')}-*.whl"), key=os.path.getmtime)
    return wheels[-1]


def declared_packages(metadata: dict[str, Any], source: Path) -> dict[str, str]:
    """Every package the metadata declares (torch, monai, numpy and the required ones), name -> version.

    Raises:
        InputError: a declared name is not a pip distribution name (``shared``, a path, a URL), or the
            two declared lists differ (MONAI would replace one by the other).
    """
    required = metadata.get(DECLARED_KEYS[0]) or {}
    if (metadata.get(DECLARED_KEYS[1]) or {}) != required:
        raise InputError(source, f"{DECLARED_KEYS[0]} and {DECLARED_KEYS[1]} must list the same packages "
                                 "(MONAI reads the second as the old name of the first)")
    for name in required:
        if name in IMPORT_NAMES or not REQUIREMENT_NAME.match(name):
            raise InputError(source, f"{DECLARED_KEYS[0]} names {name!r}, which pip cannot install: name "
                                     f"distributions ({PROJECT_DISTRIBUTION} for this project's code)")
    base = {"torch": metadata.get("pytorch_version"), "monai": metadata.get("monai_version"),
            "numpy": metadata.get("numpy_version")}
    return {**{name: version for name, version in base.items() if version}, **required}


def install_line(bundle_name: str, wheel_name: str, packages: dict[str, str]) -> str:
    """The one ``pip install`` line of a downloaded bundle: its wheel and every declared package."""
    pinned = " ".join(f"{name}=={version}" for name, version in packages.items() if name != PROJECT_DISTRIBUTION)
    return f"pip install {bundle_name}/{wheel_name} {pinned}"


def package_bundle(bundle_dir: str | os.PathLike, out_dir: str | os.PathLike, *, version: str | None = None,
                   changelog: str | None = None, wheel: str | os.PathLike | None = None) -> Path:
    """Packs a bundle into the Model Zoo's zip layout (see the module docstring).

    Args:
        bundle_dir: the bundle folder.
        out_dir: where the zip is written.
        version: the packed ``metadata.json`` version (default: the bundle's); a new version needs
            ``changelog``.
        changelog: the changelog line of ``version``.
        wheel: the project's wheel; built from the source checkout when not given.

    Returns:
        Path of ``<out_dir>/<name>_v<version>.zip``.
    """
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    metadata_path = bundle_dir / "configs" / "metadata.json"
    if not metadata_path.is_file():
        raise InputError(bundle_dir, "is not a bundle (no configs/metadata.json)")
    entries = read_large_files(bundle_dir)
    for entry in entries:  # a shipped file must be the one its listing names
        if (bundle_dir / entry["path"]).is_file():
            check_shipped_file(bundle_dir / entry["path"])
    with tempfile.TemporaryDirectory(prefix="package-") as staging:
        name = json.loads(metadata_path.read_text()).get("name") or bundle_dir.resolve().name
        packed = Path(staging) / name
        _copy_items(bundle_dir, packed)
        metadata = _set_version(packed / "configs" / "metadata.json", version, changelog)
        packages = declared_packages(metadata, metadata_path)
        wheel_path = Path(wheel) if wheel is not None else build_wheel(Path(staging) / "wheel")
        declared = packages.get(PROJECT_DISTRIBUTION)
        if declared and wheel_path.name.split("-")[1] != declared:
            raise InputError(wheel_path, f"is not version {declared} of {PROJECT_DISTRIBUTION}, which "
                                         f"{metadata_path} declares: build the wheel of that version")
        shutil.copy(wheel_path, packed / wheel_path.name)
        _describe_shipped_network(packed)
        _add_install_section(packed / "docs" / "README.md", install_line(name, wheel_path.name, packages))
        out_dir.mkdir(parents=True, exist_ok=True)
        return _zip(packed, out_dir / f"{name}_v{metadata['version']}.zip")


def _copy_items(bundle_dir: Path, packed: Path) -> None:
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for item in PACKED_ITEMS:
        source = bundle_dir / item
        if source.is_dir():
            shutil.copytree(source, packed / item, ignore=ignored)
        elif source.is_file():
            packed.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, packed / item)
    for necessary in ("configs/metadata.json", "LICENSE", "docs/README.md"):
        if not (packed / necessary).is_file():
            raise InputError(bundle_dir / necessary, "missing: the Model Zoo requires it in every bundle")


def _write_config(path: Path, config: Any) -> None:
    path.write_text(json.dumps(config, indent=4) + "\n")  # the Zoo's pretty-format-json


def _set_version(metadata_path: Path, version: str | None, changelog: str | None) -> dict[str, Any]:
    metadata = json.loads(metadata_path.read_text())
    if version is not None and str(version) != metadata.get("version"):
        if not changelog:
            raise InputError(None, f"--version {version} needs --changelog \"what changed\" (the Zoo requires "
                                   "the version in metadata.json's changelog)")
        if str(version) in metadata.get("changelog", {}):
            raise InputError(metadata_path, f"version {version} is already in the changelog: choose a new one")
        metadata["version"] = str(version)
        metadata["changelog"] = {str(version): changelog, **metadata.get("changelog", {})}
    elif changelog:
        raise InputError(None, "--changelog goes with a new --version")
    _write_config(metadata_path, metadata)
    return metadata


def _describe_shipped_network(packed: Path) -> None:
    """Sets the network nodes of the load configs to the shipped model's plan, then checks every tensor loads."""
    weights = packed / MODELS_FOLDER / "model.pt"
    if not weights.is_file():
        return
    state = read_checkpoint(weights)
    plan_path = packed / MODELS_FOLDER / "model_plan.json"
    spec = json.loads(plan_path.read_text()).get("network") if plan_path.is_file() else None
    for name in LOAD_CONFIGS:
        path = packed / "configs" / name
        if not path.is_file():
            continue
        if spec is not None:
            config = json.loads(path.read_text())
            _set_network_nodes(config, spec)
            _write_config(path, config)
        check_every_tensor_loads(_built_network(path, packed), state, config=path, weights=weights)


def _set_network_nodes(config: dict[str, Any], spec: dict[str, Any]) -> None:
    """``network_def`` (a ``build_network`` call) builds ``spec``: a ``"@node"`` argument sets that node."""
    definition = config.get("network_def")
    if not isinstance(definition, dict) or definition.get("_target_") != "shared.bundles.build_network":
        return
    for name, value in {"target": spec["target"], **spec["arguments"]}.items():
        current = definition.get(name)
        if isinstance(current, str) and re.fullmatch(r"@[A-Za-z0-9_#]+", current):
            _set_node(config, current[1:].split("#"), value)  # e.g. planned_encoder: no data planning then
            if current[1:] != name and _is_literal(config.get(name)):
                config[name] = value  # the node users read and override (encoder beside planned_encoder)
        else:
            definition[name] = value


def _is_literal(value: Any) -> bool:
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    if isinstance(value, dict):
        return "_target_" not in value
    return value is not None


def _set_node(config: Any, path: list[str], value: Any) -> None:
    for key in path[:-1]:
        config = config[int(key)] if isinstance(config, list) else config[key]
    if isinstance(config, list):
        config[int(path[-1])] = value
    else:
        config[path[-1]] = value


def _built_network(config_path: Path, bundle_root: Path) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_path))
    parser["bundle_root"] = str(bundle_root)
    try:
        return parser.get_parsed_content("network_def")
    except Exception as error:  # MONAI wraps what the config raises
        raise InputError(config_path, f"network_def cannot be built ({error})") from None


def check_every_tensor_loads(network: Any, state: Any, *, config: Path, weights: Path) -> None:
    """Refuses a shipped ``model.pt`` that ``network`` (the config's ``network_def``) would load only in part.

    ``monai.bundle.load()`` copies the tensors whose names and shapes match and only logs the rest;
    a packed bundle must load them all.

    Raises:
        InputError: naming the config, how many tensors would load, and the first that would not.
    """
    if not isinstance(state, dict):
        raise InputError(weights, "is not a state dict (name -> tensor)")
    target = network.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mis_shaped = sorted(key for key in set(target) & set(state)
                        if tuple(target[key].shape) != tuple(getattr(state[key], "shape", ())))
    if missing or unexpected or mis_shaped:
        loaded = len(target) - len(missing) - len(mis_shaped)
        first = (missing or unexpected or mis_shaped)[0]
        raise InputError(config, f"network_def builds a network that would load {loaded} of its {len(target)} "
                                 f"tensors from {weights.name} ({len(missing)} missing, {len(unexpected)} unexpected, "
                                 f"{len(mis_shaped)} of another shape; first: {first}). Ship the model_plan.json "
                                 "the weights were trained with (python -m tools.ship_weights), or make "
                                 "network_def describe the shipped network")


def _add_install_section(readme: Path, line: str) -> None:
    lines = readme.read_text().split("\n")
    title = next((number for number, text in enumerate(lines) if text.startswith("# ")), -1)
    section = ["", "## Install (the packed bundle)", "",
               "The bundle runs this project's code (`shared`, in the `missing-piece-detection` wheel beside",
               "`configs/`) with the packages `metadata.json` declares. From the folder that holds the bundle",
               "(where `python -m monai.bundle download` put it), in a fresh virtual environment:", "",
               "```bash", line, "```"]
    if title + 1 < len(lines) and lines[title + 1]:
        section.append("")
    readme.write_text("\n".join(lines[:title + 1] + section + lines[title + 1:]))


def _zip(packed: Path, path: Path) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(item for item in packed.rglob("*") if item.is_file()):
            archive.write(file, Path(packed.name) / file.relative_to(packed))
    os.replace(temporary, path)
    return path
