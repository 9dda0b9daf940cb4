"""Fine-tuning from a pre-trained encoder, as bundle configs call it: load and transfer, log what was
transferred, and hold the encoder still for the freeze phase (paper, section 3 and appendix C.3).

The transfer is its own step: the bundles' ``initialize`` runs ``$@transfer``
(:func:`load_pretrained_encoder`) before anything trains, whatever the trainer node says. Its report
(:class:`shared.checkpoints.transfer.TransferReport`) is what the rest reads: the length of the freeze
phase (:func:`freeze_iterations`, 0 when nothing was transferred) and the freeze handler
(:func:`freeze_phase`) in ``train#handlers``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from torch import nn

from shared.checkpoints.loading import load_pretrained
from shared.checkpoints.preprocessing_match import preprocessing_differences
from shared.checkpoints.transfer import TransferReport, transfer_encoder
from shared.data.fingerprint import channel_modalities
from shared.data.plan import parse_spacing
from shared.engines.freeze import FreezePhase, frozen_parameter_names
from shared.io.datalist import read_datalist
from shared.io.errors import InputError

logger = logging.getLogger(__name__)


def load_pretrained_encoder(
    network: nn.Module,
    pretrained: str | os.PathLike | None,
    *,
    mode: str = "encoder",
    stem: str = "random",
    stem_id: str | None = None,
    allow_missing: Sequence[str] = (),
    expected_architecture: dict[str, Any] | None = None,
    spacing: str | Sequence[float] | None = None,
    datalist: str | os.PathLike | None = None,
) -> TransferReport | None:
    """Transfer ``pretrained`` (a manifest, our ``encoder.pt``, a folder, our trainer's ``model.pt`` or
    checkpoint, an nnssl or MultiTalent checkpoint) into ``network``; ``None`` or ``""`` trains from scratch.

    The transfer refuses a partial load (see :func:`shared.checkpoints.transfer.transfer_encoder`), so
    training never starts on a half-loaded encoder. The bundles call this in ``initialize``, before the
    data are preprocessed, so a bad encoder fails in seconds.

    A fine-tuning spacing or normalisation other than the pre-training's (as its manifest records) is
    logged as a warning (:mod:`shared.checkpoints.preprocessing_match`). The plan does not exist yet at
    this point: the spacing compared is the bundle's ``spacing`` when it names one (``"fixed"`` or
    explicit mm; a ``"median"`` spacing is known only after preprocessing and is not compared), the
    normalisation follows from the datalist's ``modality``.

    Args:
        spacing: the bundle's spacing request (``"fixed"``, ``"median"``, ``"x,y,z"`` or 3 numbers).
        datalist: the fine-tuning datalist, for its channels' modalities.

    Raises:
        InputError: naming ``pretrained`` when it is missing, unreadable, corrupt (sha256) or does not
            fit the network (architecture, keys, shapes).
    """
    if not pretrained:
        logger.info("no pre-trained encoder: training from scratch")
        return None
    try:
        loaded = load_pretrained(pretrained, stem=stem_id)
    except OSError as error:  # unreadable file or folder: the user's to fix, like a missing one
        raise InputError(pretrained, f"the pre-trained encoder cannot be read: {error.strerror or error}") from error
    report = transfer_encoder(network, loaded, mode=mode, stem=stem,
                              allow_missing=allow_missing, expected_architecture=expected_architecture)
    logger.info("transferred %d tensors from %s (mode %s, stem %s); %d skipped",
                len(report.transferred_keys), pretrained, mode, stem, len(report.skipped_keys))
    in_channels = getattr(getattr(network, "encoder", network), "in_channels", None)
    _warn_about_preprocessing(loaded.manifest, pretrained, spacing, datalist, in_channels)
    return report


def _warn_about_preprocessing(manifest: dict[str, Any], pretrained: str | os.PathLike,
                              spacing: str | Sequence[float] | None, datalist: str | os.PathLike | None,
                              in_channels: int | None) -> None:
    target = None if spacing is None else parse_spacing(spacing)[1]
    modalities = None
    if datalist and in_channels:
        try:
            modalities = channel_modalities(read_datalist(datalist), int(in_channels))
        except InputError:  # preprocessing names a broken datalist; the transfer is not the place
            modalities = None
    for difference in preprocessing_differences(manifest, spacing=target, modalities=modalities):
        logger.warning("the pre-trained encoder %s was made with other preprocessing than this fine-tuning: %s",
                       pretrained, difference)


def freeze_iterations(report: TransferReport | None, iterations: int) -> int:
    """Length of the freeze phase: ``iterations`` when something was transferred, else 0.

    The phase comes before the full schedule, added to it (nnDetection: 3 frozen epochs, then 50).
    """
    return int(iterations) if report is not None and report.transferred_keys else 0


def freeze_phase(network: nn.Module, transfer: TransferReport | None, iterations: int, *,
                 frozen: str = "encoder") -> FreezePhase:
    """The trainer handler that holds ``frozen`` still for the first ``iterations`` after a transfer.

    Args:
        network: the network the transfer loaded into.
        transfer: what :func:`load_pretrained_encoder` returned; ``None`` (training from scratch) or a
            report with nothing transferred gives a phase of 0 iterations.
        iterations: the freeze phase's length (:func:`freeze_iterations`).
        frozen: ``"encoder"`` (the paper's: the whole encoder, a random stem included) or
            ``"transferred"`` (only the transferred tensors); see :mod:`shared.engines.freeze`.
    """
    if transfer is None or not transfer.transferred_keys or iterations <= 0:
        return FreezePhase(network, [], 0)
    names = frozen_parameter_names(network, transfer, frozen)
    logger.info("freeze phase: %d parameters (%s) held still for %d iterations", len(names), frozen, iterations)
    return FreezePhase(network, names, iterations)
