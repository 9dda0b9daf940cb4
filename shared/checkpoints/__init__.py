"""Weights between tasks: encoder export with a manifest, import of released encoders, transfer.

``export_encoder`` (manifest), ``load_pretrained`` (any understood file), ``import_checkpoint`` (nnssl, MultiTalent),
``transfer_encoder`` (into a detector, with a report), ``fetch_large_files`` (bundle weights).
"""

from shared.checkpoints.large_files import fetch_large_files
from shared.checkpoints.loading import load_pretrained
from shared.checkpoints.manifest import PretrainedEncoder, export_encoder, save_pretrained
from shared.checkpoints.transfer import TransferReport, transfer_encoder

__all__ = ["PretrainedEncoder", "TransferReport", "export_encoder", "fetch_large_files", "load_pretrained",
           "save_pretrained", "transfer_encoder"]
