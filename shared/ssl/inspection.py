"""Looking at what a pre-trained masked autoencoder learned: mask a whole scan and reconstruct it.

The scan is preprocessed as in pre-training (the spacing of the encoder's manifest, per-image
z-score), one block mask is drawn over the whole volume, and the network reconstructs the masked scan
with a sliding window over its patches. Four NIfTI files on the preprocessed grid come out per scan
(input, masked input, reconstruction, mask) to open side by side in a viewer, with the masked MSE.

The pre-training bundle's ``inference.json`` runs it as a MONAI infer workflow: its ``dataset`` is the
scans through the preprocessing transforms, its ``inferer`` a :class:`MaskedReconstructionInferer`, its
``evaluator`` :class:`shared.engines.inference.ScanEvaluator`, and its handlers a progress bar and a
:class:`ReconstructionWriter`. :func:`reconstruct_scans` does the same in plain Python.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.inferers import Inferer, sliding_window_inference
from torch import nn

from shared.checkpoints.manifest import read_manifest
from shared.data.preprocess import preprocess_volume
from shared.data.validate import case_id
from shared.io.atomic import write_json
from shared.io.images import load_volume, save_nifti
from shared.ssl.mae import masked_mse_loss
from shared.ssl.masking import as_triple, block_mask


def plan_from_manifest(manifest: str | os.PathLike) -> dict[str, Any]:
    """The preprocessing of pre-training inputs, from an ``encoder.json`` (or the folder holding it)."""
    content = read_manifest(manifest)
    modality = content["modality"]
    modalities = modality if isinstance(modality, list) else [modality] * int(content["in_channels"])
    return {"target_spacing": content["spacing"],
            "channels": [{"modality": m, "clip": None, "mean": None, "std": None, "per_image": True}
                         for m in modalities]}


class MaskedReconstructionInferer(Inferer):
    """A MONAI inferer that hides blocks of a whole scan and reconstructs it from its patches.

    The scan is zero-padded at the far end of each axis to a multiple of the block, one block mask is
    drawn over it (the mask generator is seeded once, so the n-th scan of a run always gets the same
    mask), the masked scan goes through the network by a sliding window of ``patch_size`` tiles, and
    every output is cropped back to the scan's own size.

    Args:
        patch_size: sliding-window tile, a multiple of the network's coarsest stride.
        block_size, mask_ratio: the mask, as in pre-training.
        seed: seed of the masks.
        overlap: sliding-window overlap.
        sw_batch_size: tiles per network call.
    """

    def __init__(self, patch_size: Sequence[int], *, block_size: int | Sequence[int] = 16, mask_ratio: float = 0.75,
                 seed: int = 0, overlap: float = 0.5, sw_batch_size: int = 1):
        super().__init__()
        self.patch_size = [int(size) for size in patch_size]
        self.block_size, self.mask_ratio = as_triple(block_size, "block_size"), float(mask_ratio)
        self.overlap, self.sw_batch_size = float(overlap), int(sw_batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, inputs: torch.Tensor, network: Callable[[torch.Tensor], torch.Tensor],
                 *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Mask and reconstruct one scan.

        Args:
            inputs: the preprocessed scan.
            network: the reconstruction network (C → C channels).

        Returns:
            ``input``, ``masked``, ``reconstruction`` (1, C, X, Y, Z), ``mask`` (1, 1, X, Y, Z) bool
            (True where hidden), and ``masked_mse`` (the MSE over hidden voxels, a float).

        Shape:
            inputs: (1, C, X, Y, Z).
        """
        if inputs.ndim != 5 or inputs.shape[0] != 1:
            raise ValueError(f"the inferer takes one scan (1, C, X, Y, Z), got {tuple(inputs.shape)}")
        size = inputs.shape[2:]
        pad = [amount for axis in (2, 1, 0) for amount in (0, -size[axis] % self.block_size[axis])]
        clean = torch.nn.functional.pad(inputs.float(), pad)
        mask = block_mask(1, clean.shape[2:], block_size=self.block_size, mask_ratio=self.mask_ratio,
                          generator=self.generator, device=clean.device)
        masked = clean.masked_fill(mask, 0.0)
        with torch.no_grad():
            reconstruction = sliding_window_inference(masked, self.patch_size, self.sw_batch_size, network,
                                                      overlap=self.overlap)
        crop = (slice(None), slice(None), slice(0, size[0]), slice(0, size[1]), slice(0, size[2]))
        clean, masked, reconstruction, mask = clean[crop], masked[crop], reconstruction[crop], mask[crop]
        return {"input": clean, "masked": masked, "reconstruction": reconstruction, "mask": mask,
                "masked_mse": float(masked_mse_loss(reconstruction, clean, mask))}


class ReconstructionWriter:
    """Handler: each scan's reconstruction as NIfTI files, and ``reconstructions.json`` at the end.

    Per iteration (one scan: the output of :class:`MaskedReconstructionInferer` with the scan's
    ``affine`` and ``sources``) it writes ``<case>_input``, ``<case>_masked``, ``<case>_reconstruction``
    (first channel, float32) and ``<case>_mask`` (uint8) ``.nii.gz`` on the preprocessed grid; when the
    run completes, ``reconstructions.json`` lists ``{"case", "masked_mse", "files"}`` per scan. Every
    file is written atomically.

    Args:
        output_dir: where the files go.
    """

    NAMES = ("input", "masked", "reconstruction", "mask")

    def __init__(self, output_dir: str | os.PathLike, *, affine_key: str = "affine", sources_key: str = "sources"):
        self.output_dir, self.affine_key, self.sources_key = Path(output_dir), affine_key, sources_key
        self.results: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_case)
        engine.add_event_handler(Events.COMPLETED, self._write_summary)

    def _reset(self, engine: Engine) -> None:
        self.results = []

    def _write_case(self, engine: Engine) -> None:
        self.results.append(write_reconstruction(engine.state.output, self.output_dir,
                                                 affine_key=self.affine_key, sources_key=self.sources_key))

    def _write_summary(self, engine: Engine) -> None:
        write_json(self.output_dir / "reconstructions.json", self.results)


def write_reconstruction(output: dict[str, Any], output_dir: str | os.PathLike, *, affine_key: str = "affine",
                         sources_key: str = "sources") -> dict[str, Any]:
    """One scan's four NIfTI files (see :class:`ReconstructionWriter`); returns its ``reconstructions.json`` entry."""
    case = case_id(output[sources_key])
    affine = np.asarray(output[affine_key], dtype=np.float64)
    files = {}
    for name in ReconstructionWriter.NAMES:
        volume = torch.as_tensor(output[name])[0, 0].detach().cpu().numpy()
        volume = volume.astype(np.uint8) if name == "mask" else volume.astype(np.float32)
        files[name] = str(save_nifti(Path(output_dir) / f"{case}_{name}.nii.gz", volume, affine))
    return {"case": case, "masked_mse": float(output["masked_mse"]), "files": files}


def reconstruct_scans(network: nn.Module, images: Sequence[str | Sequence[str]], output_dir: str | os.PathLike, *,
                      plan: dict[str, Any], patch_size: Sequence[int], block_size: int | Sequence[int] = 16,
                      mask_ratio: float = 0.75, seed: int = 0, device: str | torch.device = "cpu",
                      overlap: float = 0.5) -> list[dict[str, Any]]:
    """Mask and reconstruct every scan in plain Python (the bundle's workflow without MONAI's engine).

    Args:
        network: the reconstruction network (C → C channels).
        images: scans (one path, or one per channel).
        output_dir: where the files of :class:`ReconstructionWriter` go.
        plan: ``target_spacing`` and ``channels`` (:func:`plan_from_manifest`).
        patch_size: sliding-window size, a multiple of the network's coarsest stride.
        block_size, mask_ratio: the mask, as in pre-training.
        seed: seed of the masks.
        device: where the network runs.
        overlap: sliding-window overlap.

    Returns:
        One ``{"case", "masked_mse", "files"}`` per scan.
    """
    output_dir = Path(output_dir)
    network = network.to(device).eval()
    inferer = MaskedReconstructionInferer(patch_size, block_size=block_size, mask_ratio=mask_ratio, seed=seed,
                                          overlap=overlap)
    results = []
    for image in images:
        volume = load_volume(image)
        array, affine = preprocess_volume(volume, plan)
        found = inferer(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None].to(device), network)
        results.append(write_reconstruction({**found, "affine": affine, "sources": volume.sources}, output_dir))
    write_json(output_dir / "reconstructions.json", results)
    return results
