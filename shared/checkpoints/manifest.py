"""Pre-trained encoders on disk: ``encoder.pt`` (a plain state dict) beside ``encoder.json`` (its manifest).

The manifest records everything a fine-tuning run must match or should know: the architecture and
its arguments, input channels and modality, the spacing and intensity normalisation the encoder saw,
the pre-training method and its settings, the data, the weights' sha256, when and with which library
versions it was made. This module owns the format: ``new_manifest`` is the one place a manifest is
assembled (exports here, the importers of other projects' checkpoints in ``shared.checkpoints.importers``),
``read_manifest_encoder`` reads it back; ``shared.checkpoints.loading.load_pretrained`` reads any file.

Optional per-dataset stems (MultiTalent) travel in ``stems.pt`` beside the weights: keys
``<stem id>.<key inside the stem>``, hashed in the manifest like the weights.

The manifest names the weight files and their sha256, and is written last: an export first saves the
weights under content-addressed names (``encoder.<sha256[:16]>.pt``), then the manifest naming them
(the commit point), then copies them to ``encoder.pt`` / ``stems.pt``, then the manifest naming those,
and deletes the content-addressed files. A kill at any point leaves a manifest whose files exist and
match, describing either the previous encoder or the new one.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.checkpoints.safe_load import read_checkpoint, sha256_file
from shared.io.atomic import atomic_path, remove_orphaned_temporaries, save_torch, write_json
from shared.io.errors import InputError

FORMAT_NAME = "missing-piece-encoder"
FORMAT_VERSION = 1
WEIGHTS_NAME = "encoder.pt"
MANIFEST_NAME = "encoder.json"
STEMS_NAME = "stems.pt"

StateDict = dict[str, torch.Tensor]
SCOPES = ("encoder", "network")


@dataclass
class PretrainedEncoder:
    """Encoder weights with their manifest.

    Attributes:
        state_dict: the encoder's state dict, keys relative to the encoder (``stem.convs.0.conv.weight``).
        manifest: the manifest as a dict (see the module docstring).
        stems: alternative stems by id, keys relative to the stem (``convs.0.conv.weight``); empty
            unless the source had several (MultiTalent).
        source: the file it was read from, for error messages.
        scope: ``"encoder"`` (keys relative to the encoder) or ``"network"`` (a whole network's state
            dict, keys as in ``network.state_dict()``: our trainer's ``model.pt`` and checkpoints).
    """

    state_dict: StateDict
    manifest: dict[str, Any]
    stems: dict[str, StateDict] = field(default_factory=dict)
    source: str | None = None
    scope: str = "encoder"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope: expected one of {SCOPES}, got {self.scope!r}")


def encoder_of(network_or_encoder: nn.Module) -> nn.Module:
    """The module whose weights are exported: ``.encoder`` when the module has one, else itself."""
    encoder = getattr(network_or_encoder, "encoder", None)
    return encoder if isinstance(encoder, nn.Module) else network_or_encoder


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the weights, for the manifest."""
    import numpy

    try:  # the installed distribution's version, without importing monai (slow to import)
        monai_version = importlib.metadata.version("monai")
    except importlib.metadata.PackageNotFoundError:
        monai_version = "not installed"
    return {"python": platform.python_version(), "torch": torch.__version__, "monai": monai_version,
            "numpy": numpy.__version__}


def _plain(state_dict: dict[str, torch.Tensor]) -> StateDict:
    """Detached contiguous CPU copies; keys that alias one tensor (DNA's ``all_modules``) stay shared.

    Without the sharing, ``torch.save`` would write every aliased weight twice (ResEnc-L: 689 MB
    instead of 345 MB).
    """
    copies: dict[tuple, torch.Tensor] = {}
    plain = {}
    for key, value in state_dict.items():
        identity = (value.device, value.data_ptr(), value.dtype, tuple(value.shape), value.stride())
        if identity not in copies or value.numel() == 0:
            copies[identity] = value.detach().to("cpu").clone().contiguous()
        plain[key] = copies[identity]
    return plain


def _stage_tensors(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """Save the bytes ``path`` is to hold under a content-addressed name beside it (``encoder.<sha16>.pt``).

    Returns:
        The manifest entry naming the staged file, with its sha256.
    """
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:  # saved under the final name, so the archive inside (named after the file) is the final one
        saved = save_torch(tensors, folder / path.name)
        digest = sha256_file(saved)
        staged = path.with_name(f"{path.stem}.{digest[:16]}{path.suffix}")
        os.replace(saved, staged)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"file": staged.name, "sha256": digest}


def _publish_staged(entry: dict[str, Any], path: Path) -> dict[str, Any]:
    """Copy a staged weight file to its final name (the manifest still names the staged copy)."""
    with atomic_path(path) as temporary:
        shutil.copyfile(path.with_name(entry["file"]), temporary)
    return {**entry, "file": path.name}


def _remove_staged(folder: Path) -> None:
    """Delete content-addressed weight files no manifest names any more (left by killed exports too)."""
    for name in (WEIGHTS_NAME, STEMS_NAME):
        stem, suffix = os.path.splitext(name)
        for path in folder.glob(f"{stem}.*{suffix}"):
            if re.fullmatch(rf"{re.escape(stem)}\.[0-9a-f]{{16}}{re.escape(suffix)}", path.name):
                path.unlink(missing_ok=True)


def save_pretrained(pretrained: PretrainedEncoder, out_dir: str | os.PathLike) -> Path:
    """Writes ``encoder.pt`` (+ ``stems.pt`` when there are stems) and ``encoder.json``, atomically as a pair.

    The weights' file names and sha256 are filled into the manifest; the rest of the manifest is
    written as given. A kill part-way leaves the previous encoder or the new one, readable (see the
    module docstring); temporaries of earlier killed writes in ``out_dir`` are removed first.

    Args:
        pretrained: weights, manifest, optional stems.
        out_dir: output folder (created).

    Returns:
        Path of the manifest.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries(out_dir)
    manifest = dict(pretrained.manifest)
    weights = _plain(pretrained.state_dict)
    manifest["weights"] = {
        **_stage_tensors(weights, out_dir / WEIGHTS_NAME),
        "num_tensors": len(weights),
        "num_parameters": int(sum(value.numel() for value in weights.values() if value.is_floating_point())),
    }
    if pretrained.stems:
        flat = {f"{stem_id}.{key}": value for stem_id, stem in pretrained.stems.items() for key, value in stem.items()}
        manifest["stems"] = {**_stage_tensors(_plain(flat), out_dir / STEMS_NAME),
                             "ids": {stem_id: stem_input_channels(stem) for stem_id, stem in pretrained.stems.items()}}
    else:
        manifest.pop("stems", None)
    write_json(out_dir / MANIFEST_NAME, manifest)  # the commit point: it names the staged files
    manifest["weights"] = _publish_staged(manifest["weights"], out_dir / WEIGHTS_NAME)
    if pretrained.stems:
        manifest["stems"] = _publish_staged(manifest["stems"], out_dir / STEMS_NAME)
    path = write_json(out_dir / MANIFEST_NAME, manifest)
    _remove_staged(out_dir)
    return path


def export_encoder(
    network_or_encoder: nn.Module,
    out_dir: str | os.PathLike,
    *,
    architecture: dict[str, Any],
    in_channels: int,
    modality: str | list[str],
    spacing: list[float] | tuple[float, ...],
    normalization: str | dict[str, Any],
    method: str,
    method_settings: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    stems: dict[str, StateDict] | None = None,
) -> Path:
    """Exports the encoder of a (pre-trained) network with its manifest.

    Args:
        network_or_encoder: a network with an ``encoder`` attribute, or the encoder itself.
        out_dir: output folder; gets ``encoder.pt`` and ``encoder.json``.
        architecture: JSON-able encoder spec, e.g. ``{"name": "resenc", "preset": "paper"}``.
        in_channels: input channels the encoder was trained with.
        modality: e.g. ``"CT"`` or one name per channel.
        spacing: voxel spacing in mm the inputs were resampled to.
        normalization: intensity normalisation used (name or settings).
        method: pre-training method (``"mae"``, ``"multitalent"``...).
        method_settings: its settings (mask ratio, block size, schedule...).
        data: what it saw (data set names, number of volumes...).
        stems: optional alternative stems by id, keys relative to the stem.

    Returns:
        Path of the manifest ``encoder.json``.
    """
    if not isinstance(architecture, dict) or "name" not in architecture:
        raise ValueError(f"architecture: expected a dict with at least a 'name', got {architecture!r}")
    encoder = encoder_of(network_or_encoder)
    manifest = new_manifest(
        architecture=architecture, in_channels=in_channels, modality=modality, spacing=spacing,
        normalization=normalization, method=method, method_settings=method_settings, data=data,
        stem_keys=list(getattr(encoder, "stem_keys", ["stem."])),
    )
    return save_pretrained(PretrainedEncoder(encoder.state_dict(), manifest, dict(stems or {})), out_dir)


def new_manifest(
    *,
    architecture: dict[str, Any],
    in_channels: int,
    modality: str | list[str] | None,
    spacing: list[float] | tuple[float, ...] | None,
    normalization: Any,
    method: str,
    method_settings: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    stem_keys: list[str] | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A manifest (without its ``weights`` entry, which ``save_pretrained`` fills in).

    Args:
        architecture: a spec :func:`shared.encoders.presets.build_encoder` takes.
        in_channels: input channels of the stem.
        modality: e.g. ``"CT"``, one name per channel, or ``None`` when the source does not say.
        spacing: voxel spacing in mm of the inputs, or ``None`` when unknown.
        normalization: the intensity normalisation (our description or the source's scheme names).
        method: the pre-training method.
        method_settings: its settings.
        data: what it saw.
        stem_keys: key prefixes of the layers that read the input channels.
        source: for imports, ``{"format", "file", "sha256"}`` of the converted checkpoint.

    Returns:
        The manifest dict.
    """
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": dict(architecture),
        "in_channels": int(in_channels),
        "modality": modality,
        "spacing": None if spacing is None else [float(value) for value in spacing],
        "normalization": normalization,
        "method": method,
        "method_settings": dict(method_settings or {}),
        "data": dict(data or {}),
        "stem_keys": list(stem_keys or ["stem."]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }
    if source is not None:
        manifest["source"] = dict(source)
    return manifest


def stem_input_channels(stem: StateDict) -> int:
    """Input channels of a stem: the second dimension of its first convolution weight (5-D tensor).

    Args:
        stem: stem state dict (any key prefix).

    Returns:
        The channel count.
    """
    for key in sorted(stem):
        if stem[key].ndim == 5:
            return int(stem[key].shape[1])
    raise ValueError(f"no convolution weight among the stem keys {sorted(stem)}")


def with_stem(pretrained: PretrainedEncoder, stem_id: str) -> PretrainedEncoder:
    """The same encoder with the per-dataset stem ``stem_id`` in its stem keys (and ``in_channels``).

    Args:
        pretrained: an encoder with ``stems`` (a MultiTalent export).
        stem_id: the data set id.

    Returns:
        A new ``PretrainedEncoder`` (the stems are kept); the manifest records ``selected_stem``.

    Raises:
        InputError: naming the file and the available stems, when there is no such stem.
    """
    if stem_id not in pretrained.stems:
        offered = ", ".join(f"{name} ({stem_input_channels(stem)})" for name, stem in pretrained.stems.items())
        raise InputError(pretrained.source, f"has no stem '{stem_id}' (stems and their channels: {offered or 'none'})")
    prefix = list(pretrained.manifest.get("stem_keys") or ["stem."])[0]
    state = {key: value for key, value in pretrained.state_dict.items() if not key.startswith(prefix)}
    state.update({prefix + key: value for key, value in pretrained.stems[stem_id].items()})
    manifest = {**pretrained.manifest, "in_channels": stem_input_channels(pretrained.stems[stem_id]),
                "selected_stem": stem_id}
    return PretrainedEncoder(state, manifest, dict(pretrained.stems), pretrained.source, pretrained.scope)


def _verified_tensors(folder: Path, entry: Any, manifest_path: Path, what: str) -> StateDict:
    if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
        raise InputError(manifest_path, f"'{what}' must name a 'file' and its 'sha256'")
    path = folder / entry["file"]
    if not path.is_file():
        raise InputError(manifest_path, f"the {what} file {path} it names does not exist")
    found = sha256_file(path)
    if found != entry["sha256"]:
        raise InputError(path, f"sha256 is {found} but the manifest {manifest_path.name} expects "
                               f"{entry['sha256']}: the file is corrupt or was replaced. Refusing it")
    tensors = read_checkpoint(path)
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise InputError(path, "expected a plain state dict (str -> tensor)")
    return tensors


def read_manifest(manifest: str | os.PathLike) -> dict[str, Any]:
    """The content of an ``encoder.json`` (given itself or the folder holding it), weights not read.

    Raises:
        InputError: naming the path, when there is no manifest or it is not readable JSON.
    """
    import json

    path = Path(manifest)
    path = path / MANIFEST_NAME if path.is_dir() else path
    if not path.is_file():
        raise InputError(path, "no encoder manifest: pre-train first (the bundle writes encoder.json), or get "
                               "the bundle's weights (large_files.yml)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(path, f"is not a readable JSON manifest ({error})") from None


def read_manifest_encoder(manifest_path: str | os.PathLike) -> PretrainedEncoder:
    """Reads our format from its manifest, verifying the sha256 of every weight file.

    Args:
        manifest_path: path of ``encoder.json``.

    Returns:
        The encoder, its manifest and stems.
    """
    import json

    manifest_path = Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(manifest_path, f"is not a readable JSON manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise InputError(manifest_path, f"is not an encoder manifest (expected \"format\": \"{FORMAT_NAME}\")")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(manifest_path, f"format_version {manifest['format_version']} is newer than this "
                                        f"library understands ({FORMAT_VERSION}): update the library")
    folder = manifest_path.parent
    state_dict = _verified_tensors(folder, manifest.get("weights"), manifest_path, "weights")
    stems: dict[str, StateDict] = {}
    if manifest.get("stems"):
        flat = _verified_tensors(folder, manifest["stems"], manifest_path, "stems")
        for stem_id in manifest["stems"].get("ids", {}):
            stems[stem_id] = {key[len(stem_id) + 1:]: value for key, value in flat.items()
                              if key.startswith(f"{stem_id}.")}
    return PretrainedEncoder(state_dict, manifest, stems, source=str(manifest_path))
