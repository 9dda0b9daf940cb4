"""Reading pre-trained weights from any file the project understands, as a ``PretrainedEncoder``.

Understood: our encoder manifest (``encoder.json`` beside ``encoder.pt``, or the folder holding them;
``shared.checkpoints.manifest``); the files our trainer writes (``model.pt`` and ``model_final.pt``,
a network's plain state dict, and ``checkpoints/last_checkpoint_<N>.pt``, ``{"model", "optimizer",
"trainer"}``), read as whole networks (``scope="network"``) so that ``transfer_encoder`` can take
either everything or the encoder from them; and released checkpoints of other projects (nnssl,
MultiTalent; ``shared.checkpoints.importers``). Every file is read with ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from shared.checkpoints.importers import convert_checkpoint
from shared.checkpoints.manifest import (
    MANIFEST_NAME,
    STEMS_NAME,
    WEIGHTS_NAME,
    PretrainedEncoder,
    StateDict,
    read_manifest_encoder,
    with_stem,
)
from shared.checkpoints.safe_load import read_checkpoint, sha256_file
from shared.checkpoints.weights import DETECTOR_PREFIX
from shared.io.errors import InputError

# the trainer saves the network, whose encoder is under "encoder." (a detector holds it under "network.")
NETWORK_ENCODER_PREFIX = "encoder."
TRAINER_FORMAT = "missing-piece-trainer"


def load_pretrained(path: str | os.PathLike, *, stem: str | None = None) -> PretrainedEncoder:
    """Loads pre-trained weights from any understood format (see the module docstring).

    Args:
        path: file or folder.
        stem: stem id for checkpoints with per-dataset stems (MultiTalent's, or our MultiTalent export,
            whose chosen stem then becomes the encoder's own).

    Returns:
        The weights with a manifest: an encoder (``scope="encoder"``) or, for our trainer's files, a
        whole network (``scope="network"``, a manifest naming only the source file).
    """
    path = Path(path)
    manifest = _manifest_path(path)
    if manifest is not None:
        pretrained = read_manifest_encoder(manifest)
        return pretrained if stem is None else with_stem(pretrained, stem)
    checkpoint = read_checkpoint(path)
    converted = convert_checkpoint(checkpoint, path, stem=stem)
    if converted is not None:
        return converted
    network = trainer_network_weights(checkpoint)
    if network is not None:
        manifest = {"source": {"format": TRAINER_FORMAT, "file": path.name, "sha256": sha256_file(path)}}
        return PretrainedEncoder(network, manifest, source=str(path), scope="network")
    hint = " (our encoder.pt needs its encoder.json beside it)" if _looks_like_encoder(checkpoint) else ""
    raise InputError(path, f"unknown checkpoint format{hint}; {understood_formats()}")


def _manifest_path(path: Path) -> Path | None:
    """Our manifest for a folder, ``encoder.json``, or a weight file beside one; ``None`` for other files."""
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            raise InputError(path, f"is a folder without {MANIFEST_NAME}; {understood_formats()}")
        return path / MANIFEST_NAME
    if not path.is_file():
        raise InputError(path, "no such file or folder")
    if path.suffix == ".json":
        return path
    if path.name in (WEIGHTS_NAME, STEMS_NAME) and (path.parent / MANIFEST_NAME).is_file():
        return path.parent / MANIFEST_NAME
    return None


def trainer_network_weights(checkpoint: Any) -> StateDict | None:
    """The network state dict in a file our trainer wrote; ``None`` for anything else.

    Args:
        checkpoint: what ``read_checkpoint`` returned: a plain state dict (``model.pt``) or a training
            checkpoint ``{"model": state dict, "optimizer": ..., "trainer": ...}``.

    Returns:
        The network's state dict (a detector's ``network.`` prefix removed), when it holds an encoder.
    """
    if not isinstance(checkpoint, dict):
        return None
    if "model" in checkpoint and "trainer" in checkpoint:
        checkpoint = checkpoint["model"]
    if not checkpoint or not all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        return None
    if all(str(key).startswith(DETECTOR_PREFIX) for key in checkpoint):
        checkpoint = {key[len(DETECTOR_PREFIX):]: value for key, value in checkpoint.items()}
    if not any(str(key).startswith(NETWORK_ENCODER_PREFIX) for key in checkpoint):
        return None
    return dict(checkpoint)


def _looks_like_encoder(checkpoint: Any) -> bool:
    return isinstance(checkpoint, dict) and any(str(key).startswith("stem.") for key in checkpoint)


def understood_formats() -> str:
    """One sentence listing the formats ``load_pretrained`` reads, for error messages."""
    return (
        "understood formats: (1) our encoder.json manifest beside encoder.pt, or a folder holding them; "
        "(2) our trainer's model.pt, model_final.pt or checkpoints/last_checkpoint_<N>.pt; "
        "(3) an nnssl checkpoint (a dict with 'network_weights' and 'nnssl_adaptation_plan'); "
        "(4) a MultiTalent checkpoint (weights with per-dataset stems 'encoder.stem.<id>.*', "
        "choose one with stem=<id>)"
    )
