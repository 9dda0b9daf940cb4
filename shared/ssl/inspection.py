"""Looking at what a pre-trained masked autoencoder learned: mask a whole scan and reconstruct it.

The scan is preprocessed as in pre-training (the spacing of the encoder's manifest, per-image
z-score), one block mask is drawn over the whole volume, and the network reconstructs the masked scan
with a sliding window. Three NIfTI files on the preprocessed grid come out per scan (input, masked
input, reconstruction) to open side by side in a viewer, with the masked MSE.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from shared.checkpoints.manifest import MANIFEST_NAME
from shared.data.preprocess import preprocess_volume
from shared.data.validate import case_id
from shared.io.atomic import write_json
from shared.io.errors import InputError
from shared.io.images import load_volume, save_nifti
from shared.ssl.mae import masked_mse_loss
from shared.ssl.masking import as_triple, block_mask


def plan_from_manifest(manifest: str | os.PathLike) -> dict[str, Any]:
    """The preprocessing of pre-training inputs, from an ``encoder.json`` (or the folder holding it)."""
    path = Path(manifest)
    path = path / MANIFEST_NAME if path.is_dir() else path
    if not path.is_file():
        raise InputError(path, "no encoder manifest: pre-train first (the bundle writes encoder.json)")
    content = json.loads(path.read_text())
    modality = content["modality"]
    modalities = modality if isinstance(modality, list) else [modality] * int(content["in_channels"])
    return {"target_spacing": content["spacing"],
            "channels": [{"modality": m, "clip": None, "mean": None, "std": None, "per_image": True}
                         for m in modalities]}


def reconstruct_scans(network: nn.Module, images: Sequence[str | Sequence[str]], output_dir: str | os.PathLike, *,
                      plan: dict[str, Any], patch_size: Sequence[int], block_size: int | Sequence[int] = 16,
                      mask_ratio: float = 0.75, seed: int = 0, device: str | torch.device = "cpu",
                      overlap: float = 0.5) -> list[dict[str, Any]]:
    """Mask and reconstruct every scan; writes NIfTI files and ``reconstructions.json``.

    Args:
        network: the reconstruction network (C → C channels).
        images: scans (one path, or one per channel).
        output_dir: where ``<case>_input``, ``<case>_masked`` and ``<case>_reconstruction`` ``.nii.gz``
            (first channel) go.
        plan: ``target_spacing`` and ``channels`` (:func:`plan_from_manifest`).
        patch_size: sliding-window size, a multiple of the network's coarsest stride.
        block_size, mask_ratio: the mask, as in pre-training.
        seed: seed of the mask.
        device: where the network runs.
        overlap: sliding-window overlap.

    Returns:
        One ``{"case", "masked_mse", "files"}`` per scan.
    """
    output_dir = Path(output_dir)
    network = network.to(device).eval()
    generator = torch.Generator().manual_seed(int(seed))
    results = []
    for image in images:
        array, affine = preprocess_volume(load_volume(image), plan)
        clean = torch.from_numpy(_pad_to_blocks(array, as_triple(block_size, "block_size")))[None].to(device)
        mask = block_mask(1, clean.shape[2:], block_size=block_size, mask_ratio=mask_ratio, generator=generator,
                          device=device)
        masked = clean.masked_fill(mask, 0.0)
        with torch.no_grad():
            reconstruction = sliding_window_inference(masked, list(patch_size), 1, network, overlap=overlap)
        case = case_id(image)
        files = {}
        for name, volume in (("input", clean), ("masked", masked), ("reconstruction", reconstruction)):
            crop = volume[0, 0, : array.shape[1], : array.shape[2], : array.shape[3]].float().cpu().numpy()
            files[name] = str(save_nifti(output_dir / f"{case}_{name}.nii.gz", crop, affine))
        mse = float(masked_mse_loss(reconstruction, clean, mask))
        results.append({"case": case, "masked_mse": mse, "files": files})
    write_json(output_dir / "reconstructions.json", results)
    return results


def _pad_to_blocks(array: np.ndarray, blocks: tuple[int, int, int]) -> np.ndarray:
    """Zero-pad (C, X, Y, Z) at the far end of each axis to a multiple of the mask block."""
    pad = [(0, 0)] + [(0, -size % block) for size, block in zip(array.shape[1:], blocks)]
    return np.ascontiguousarray(np.pad(array, pad).astype(np.float32, copy=False))
