"""Importers for released encoders: nnssl and MultiTalent checkpoints to our encoder state dict + manifest.

Both sources save a dynamic-network-architectures ``ResidualEncoderUNet`` whose encoder lives under
``encoder.``; our ResEnc encoder mirrors that encoder's submodule names, so importing is: pick the
encoder keys, strip the prefix, and describe the architecture in our spec's terms.

- nnssl (``torch.save`` of a dict): ``network_weights`` is the whole U-Net's state dict, where the
  decoder holds a second reference to the encoder (``decoder.encoder.*``, identical values);
  ``nnssl_adaptation_plan`` tells where the encoder and stem are (``key_to_encoder``,
  ``key_to_stem``, ``keys_to_in_proj``), the input channels (``pretrain_num_input_channels``), the
  architecture (``architecture_plans``: ``arch_class_name`` and, for dynamic architectures,
  ``arch_kwargs``) and the pre-training plan (spacing, normalisation, data set).
- MultiTalent: the same layout but one stem per pre-training data set, ``encoder.stem.<id>.*``;
  the caller picks the stem that goes into ``stem.*`` and all stems are kept for ``stem="matching"``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from shared.checkpoints.manifest import PretrainedEncoder, StateDict, new_manifest, stem_input_channels
from shared.checkpoints.safe_load import read_checkpoint, sha256_file
from shared.io.errors import InputError

ENCODER_PREFIX = "encoder."
# nnssl's ResEnc-L ("Revisiting MAE pre-training..."), the paper's ResEnc encoder: our "paper" preset
RESENC_L = {"features": [32, 64, 128, 256, 320, 320], "blocks_per_stage": [1, 3, 4, 6, 6, 6],
            "strides": [1, 2, 2, 2, 2, 2], "kernel_sizes": [3, 3, 3, 3, 3, 3]}
RESENC_CLASSES = ("ResEncL", "NoSkipResEncL", "ResidualEncoderUNet")


def import_checkpoint(path: str | os.PathLike, *, stem: str | None = None) -> PretrainedEncoder:
    """Reads a foreign checkpoint (``weights_only=True``) and converts it to our encoder format.

    Args:
        path: the checkpoint file.
        stem: stem id, required for checkpoints with per-dataset stems.

    Returns:
        Our encoder state dict (keys without ``encoder.``) and a manifest.
    """
    path = Path(path)
    converted = convert_checkpoint(read_checkpoint(path), path, stem=stem)
    if converted is None:
        raise InputError(path, "is neither an nnssl nor a MultiTalent checkpoint")
    return converted


def convert_checkpoint(
    checkpoint: Any, source: str | os.PathLike, *, stem: str | None = None
) -> PretrainedEncoder | None:
    """Converts a loaded nnssl or MultiTalent checkpoint; ``None`` when it is neither.

    Args:
        checkpoint: what ``read_checkpoint`` returned.
        source: the file it came from.
        stem: stem id for checkpoints with per-dataset stems.

    Returns:
        Our encoder state dict and manifest, or ``None``.
    """
    weights = find_weights(checkpoint)
    if weights is None:
        return None
    if stem_ids(weights):
        return import_multitalent(checkpoint, source, stem=stem)
    if isinstance(checkpoint, dict) and "nnssl_adaptation_plan" in checkpoint:
        return import_nnssl(checkpoint, source)
    return None


def find_weights(checkpoint: Any) -> StateDict | None:
    """The network state dict inside a checkpoint: ``network_weights``, ``state_dict`` or ``model``."""
    if not isinstance(checkpoint, dict):
        return None
    for key in ("network_weights", "state_dict", "model"):
        weights = checkpoint.get(key)
        if isinstance(weights, dict) and weights and all(isinstance(v, torch.Tensor) for v in weights.values()):
            if any(name.startswith(ENCODER_PREFIX) for name in weights):
                return weights
    return None


def stem_ids(weights: StateDict, prefix: str = ENCODER_PREFIX) -> list[str]:
    """Ids of per-dataset stems (``<prefix>stem.<id>.*``); empty for a single stem (``stem.convs.*``)."""
    pattern = re.compile(re.escape(prefix) + r"stem\.([^.]+)\.")
    found = {match.group(1) for key in weights if (match := pattern.match(key))}
    return sorted(found - {"convs"})


def encoder_weights(weights: StateDict, prefix: str, source: Path) -> StateDict:
    """Keys under ``prefix`` with the prefix stripped; checks the decoder's duplicate copy agrees.

    Args:
        weights: the whole network's state dict.
        prefix: the encoder's prefix, e.g. ``"encoder."``.
        source: the file, for errors.

    Returns:
        The encoder's state dict.
    """
    encoder = {key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)}
    if not encoder:
        raise InputError(source, f"holds no weights under '{prefix}'")
    duplicate = "decoder." + prefix
    for key, value in weights.items():
        if key.startswith(duplicate):
            original = encoder.get(key[len(duplicate):])
            if original is None or original.shape != value.shape or not torch.equal(original, value):
                raise InputError(source, f"'{key}' differs from its encoder copy: the checkpoint is inconsistent")
    return encoder


def _per_stage(value: Any, stages: int) -> list:
    values = value if isinstance(value, (list, tuple)) else [value] * stages
    # an isotropic [s, s, s] is written as s, the way our specs broadcast scalars
    return [v[0] if isinstance(v, (list, tuple)) and len(set(v)) == 1 else v for v in values]


def _layer_spec(class_path: Any, kwargs: dict | None, names: dict[str, str]) -> Any:
    class_name = str(class_path).rsplit(".", 1)[-1]
    kwargs = {key: value for key, value in (kwargs or {}).items() if key != "inplace"}
    for fragment, name in names.items():
        if fragment in class_name:
            return [name, kwargs]
    return [class_name, kwargs]


def architecture_from_nnssl(architecture_plans: dict[str, Any], source: Path) -> dict[str, Any]:
    """Our ResEnc spec from nnssl's ``architecture_plans`` (class name and, if dynamic, its kwargs).

    Args:
        architecture_plans: ``nnssl_adaptation_plan["architecture_plans"]``.
        source: the file, for errors.

    Returns:
        e.g. ``{"name": "resenc", "preset": "paper", "features": [...], "blocks_per_stage": [...], ...}``,
        a spec :func:`shared.encoders.presets.build_encoder` takes.
    """
    class_name = architecture_plans.get("arch_class_name")
    if class_name not in RESENC_CLASSES:
        raise InputError(source, f"architecture '{class_name}' is not a residual-encoder CNN; only "
                                 f"{', '.join(RESENC_CLASSES)} can be imported")
    if class_name != "ResidualEncoderUNet" or not architecture_plans.get("arch_kwargs"):
        return {"name": "resenc", "preset": "paper", **RESENC_L}
    kwargs = architecture_plans["arch_kwargs"]
    stages = int(kwargs["n_stages"])
    architecture = {
        "name": "resenc",
        "features": [int(v) for v in _per_stage(kwargs["features_per_stage"], stages)],
        "blocks_per_stage": [int(v) for v in _per_stage(kwargs["n_blocks_per_stage"], stages)],
        "strides": _per_stage(kwargs["strides"], stages),
        "kernel_sizes": _per_stage(kwargs["kernel_sizes"], stages),
        "conv_bias": bool(kwargs.get("conv_bias", True)),
        "norm": _layer_spec(kwargs.get("norm_op"), kwargs.get("norm_op_kwargs"),
                            {"InstanceNorm": "instance", "BatchNorm": "batch", "GroupNorm": "group"}),
        "act": _layer_spec(kwargs.get("nonlin"), kwargs.get("nonlin_kwargs"),
                           {"LeakyReLU": "leakyrelu", "ReLU": "relu", "GELU": "gelu"}),
    }
    if architecture["act"][0] == "leakyrelu":
        architecture["act"][1].setdefault("negative_slope", 0.01)  # torch's default, stated explicitly
    if all(architecture[key] == RESENC_L[key] for key in RESENC_L):
        architecture["preset"] = "paper"
    return architecture


def _configuration(pretrain_plan: dict[str, Any]) -> dict[str, Any]:
    configurations = pretrain_plan.get("configurations") or {}
    if "spacing" in configurations or "normalization_schemes" in configurations:
        return configurations
    return next((value for value in configurations.values() if isinstance(value, dict)), {})


def _source_entry(path: Path, kind: str) -> dict[str, Any]:
    return {"format": kind, "file": path.name, "sha256": sha256_file(path)}


def import_nnssl(checkpoint: dict[str, Any], source: str | os.PathLike) -> PretrainedEncoder:
    """Converts a loaded nnssl checkpoint.

    Args:
        checkpoint: the dict ``torch.load`` returned (``network_weights``, ``nnssl_adaptation_plan``...).
        source: the file it came from (hashed into the manifest, named in errors).

    Returns:
        Our encoder state dict and manifest.
    """
    source = Path(source)
    plan = checkpoint["nnssl_adaptation_plan"]
    weights = find_weights(checkpoint)
    if not isinstance(plan, dict) or weights is None:
        raise InputError(source, "nnssl checkpoint without 'network_weights' or a readable adaptation plan")
    missing = [key for key in ("key_to_stem", "key_to_encoder", "pretrain_num_input_channels",
                               "architecture_plans") if key not in plan]
    if missing:
        raise InputError(source, f"nnssl adaptation plan lacks {missing}")
    key_to_stem = str(plan["key_to_stem"])
    if "." not in key_to_stem:
        raise InputError(source, f"key_to_stem '{key_to_stem}' does not name a stem inside an encoder module")
    prefix = key_to_stem.rsplit(".", 1)[0] + "."
    architecture = architecture_from_nnssl(plan["architecture_plans"], source)
    state_dict = encoder_weights(weights, prefix, source)
    stem_prefix = key_to_stem[len(prefix):] + "."
    in_channels = int(plan["pretrain_num_input_channels"])
    stem = {key: value for key, value in state_dict.items() if key.startswith(stem_prefix)}
    if not stem or stem_input_channels(stem) != in_channels:
        raise InputError(source, f"the stem '{key_to_stem}' does not take pretrain_num_input_channels={in_channels}")
    pretrain_plan = plan.get("pretrain_plan") or {}
    configuration = _configuration(pretrain_plan)
    manifest = new_manifest(
        architecture=architecture, in_channels=in_channels, stem_keys=[stem_prefix],
        modality=None,  # nnssl plans do not record it
        spacing=configuration.get("spacing"),
        normalization=configuration.get("normalization_schemes"),
        method=checkpoint.get("trainer_name", "nnssl"),
        method_settings={"recommended_downstream_patchsize": plan.get("recommended_downstream_patchsize"),
                         "in_projection_keys": [key[len(prefix):] for key in plan.get("keys_to_in_proj", ())
                                                if key.startswith(prefix)],
                         "epochs": checkpoint.get("current_epoch")},
        data={"dataset_name": pretrain_plan.get("dataset_name")},
        source=_source_entry(source, "nnssl"),
    )
    return PretrainedEncoder(state_dict, manifest, {}, source=str(source))


def infer_resenc_architecture(state_dict: StateDict) -> dict[str, Any]:
    """A buildable ResEnc spec from what the weights show: features, blocks, kernel sizes per stage.

    Strides leave no trace in the weights (only whether a stage down-samples shifts the skip's keys):
    the spec states nnU-Net's usual ones, a stride-1 first stage and 2 after, which is what the
    released checkpoints without a plan (MultiTalent) were trained with.

    Args:
        state_dict: encoder state dict with DNA keys (``stages.{s}.blocks.{b}.conv1.conv.weight``).

    Returns:
        ``{"name": "resenc", "features": [...], "blocks_per_stage": [...], "kernel_sizes": [...],
        "strides": [1, 2, ...]}``.
    """
    pattern = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.conv1\.conv\.weight$")
    blocks: dict[int, int] = {}
    features: dict[int, int] = {}
    kernels: dict[int, int] = {}
    for key, value in state_dict.items():
        match = pattern.match(key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
            features[stage], kernels[stage] = int(value.shape[0]), int(value.shape[2])
    order = sorted(blocks)
    return {"name": "resenc", "features": [features[s] for s in order],
            "blocks_per_stage": [blocks[s] for s in order], "kernel_sizes": [kernels[s] for s in order],
            "strides": [1] + [2] * (len(order) - 1)}


def import_multitalent(checkpoint: dict[str, Any], source: str | os.PathLike, *, stem: str | None) -> PretrainedEncoder:
    """Converts a loaded MultiTalent checkpoint, putting the chosen per-dataset stem into ``stem.*``.

    Args:
        checkpoint: the loaded dict (weights under ``network_weights`` or ``state_dict``).
        source: the file it came from.
        stem: id of the stem to use (the data set whose channels match the downstream task).

    Returns:
        Our encoder state dict (chosen stem as ``stem.*``), manifest, and every stem by id.
    """
    source = Path(source)
    weights = find_weights(checkpoint)
    assert weights is not None  # import_checkpoint dispatched here because it found stems
    encoder = encoder_weights(weights, ENCODER_PREFIX, source)
    stems: dict[str, StateDict] = {}
    for stem_id in stem_ids(weights):
        head = f"stem.{stem_id}."
        stems[stem_id] = {key[len(head):]: value for key, value in encoder.items() if key.startswith(head)}
    available = ", ".join(f"{name} ({stem_input_channels(stem_weights)} channel(s))"
                          for name, stem_weights in stems.items())
    if stem is None or str(stem) not in stems:
        problem = "has per-dataset stems; choose one with stem=<id>" if stem is None else f"has no stem '{stem}'"
        raise InputError(source, f"{problem}; available: {available}")
    state_dict = {key: value for key, value in encoder.items() if not key.startswith("stem.")}
    state_dict.update({f"stem.{key}": value for key, value in stems[str(stem)].items()})
    plan = checkpoint.get("nnssl_adaptation_plan") or {}
    manifest = new_manifest(
        architecture=infer_resenc_architecture(state_dict), in_channels=stem_input_channels(stems[str(stem)]),
        stem_keys=["stem."], modality=None, spacing=_configuration(plan.get("pretrain_plan") or {}).get("spacing"),
        normalization=None, method="multitalent",
        method_settings={"stem": str(stem), "available_stems": sorted(stems)},
        source=_source_entry(source, "multitalent"),
    )
    return PretrainedEncoder(state_dict, manifest, stems, source=str(source))
