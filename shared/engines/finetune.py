"""Fine-tuning from a pre-trained encoder, as bundle configs call it: load and transfer, log what was
transferred, and freeze it for the warm-up phase (paper, section 3 and appendix C.3)."""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from torch import nn

from shared.checkpoints.loading import load_pretrained
from shared.checkpoints.transfer import TransferReport, transfer_encoder
from shared.engines.warmup import WarmupFreeze
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
) -> TransferReport | None:
    """Transfer ``pretrained`` (a manifest, our ``encoder.pt``, a folder, an nnssl or MultiTalent
    checkpoint) into ``network``; ``None`` or ``""`` trains from scratch.

    The transfer refuses a partial load (see :func:`shared.checkpoints.transfer.transfer_encoder`), so
    training never starts on a half-loaded encoder. The bundles call this in ``initialize``, before the
    data are preprocessed, so a bad encoder fails in seconds.

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
    return report


def freeze_iterations(report: TransferReport | None, total_iterations: int, fraction: float = 0.05) -> int:
    """Length of the warm-up phase: ``fraction`` of the run when something was transferred, else 0."""
    return int(round(fraction * total_iterations)) if report is not None and report.transferred_keys else 0


def warmup_handlers(network: nn.Module, report: TransferReport | None, iterations: int) -> list[WarmupFreeze]:
    """The trainer's iteration handlers that keep the transferred parameters frozen during warm-up."""
    if report is None or iterations <= 0:
        return []
    return [WarmupFreeze(network, report, iterations)]
