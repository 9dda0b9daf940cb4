"""The last step of a pre-training bundle: export the trained encoder with a manifest of how it was made."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from torch import nn

from shared.checkpoints.manifest import MANIFEST_NAME, export_encoder
from shared.data.pretraining import NORMALIZATION, PretrainingData


def export_pretrained_encoder(network: nn.Module, output_dir: str | os.PathLike, data: PretrainingData, *,
                              architecture: dict[str, Any], method: str,
                              method_settings: dict[str, Any] | None = None) -> Path:
    """Write ``encoder.pt`` and ``encoder.json`` of ``network``'s encoder (rank 0 only).

    Args:
        network: the bare pre-trained network (not wrapped in DDP), with an ``encoder``.
        output_dir: where the two files go.
        data: the pre-training data (:func:`shared.data.pretraining.prepare_pretraining_data`): its
            plan gives the channels, modality and spacing; its datalist and cases go into the manifest.
        architecture: the encoder spec, e.g. ``{"name": "resenc", "preset": "paper"}``.
        method: e.g. ``"mae"``.
        method_settings: mask ratio, block size, schedule, patch size...

    Returns:
        The manifest's path.
    """
    output_dir = Path(output_dir)
    if idist.get_rank() != 0:
        return output_dir / MANIFEST_NAME
    modality = data.modality
    seen = {"datalist": os.path.abspath(data.datalist), "splits": list(data.splits),
            "num_volumes": len(data.cases), "datalist_sha256": data.plan.get("datalist_sha256")}
    return export_encoder(
        network, output_dir, architecture=architecture, in_channels=data.in_channels,
        modality=modality[0] if len(set(modality)) == 1 else modality,
        spacing=data.plan["target_spacing"], normalization=NORMALIZATION, method=method,
        method_settings=method_settings, data=seen,
    )
