"""Models Genesis pre-training: MONAI transforms that corrupt the input, a module that scores the restoration.

Models Genesis (Zhou et al., MedIA 2021; the paper's appendix C after nnssl) trains the U-Net to undo
corruptions. A bundle lists, per sample and in this order: :class:`RandGenesisFlipd` on the image
(p 0.4: an augmentation, so before the target is copied), ``monai.transforms.CopyItemsd`` of the image
to ``"target"``, then on the image only :class:`RandLocalShuffled` (p 0.5), :class:`RandBezierIntensityd`
(p 0.9) and :class:`RandInOutPaintd` (p 0.9). :class:`ModelsGenesis` wraps the network and returns the
MSE over all voxels against the clean target.

The transforms are MONAI map transforms: ``keys``, ``prob``, ``allow_missing_keys``,
``set_random_state``; every key of one call gets the same corruption. They take (C, X, Y, Z) tensors,
arrays or MetaTensors and return the input's type; spatial metadata is not updated by the flip (the
pre-training never reads it). The maths is in :mod:`shared.ssl.corruptions`.

For the bundle (``bundles/resenc_models_genesis_pretrain``): :func:`prepare_genesis_batch` is the
trainer's ``prepare_batch`` (corrupted images and clean target to the model), :class:`GenesisPreviews`
the TensorBoard previews handler, and :class:`RestorationInferer` / :class:`RestorationWriter` (or
:func:`restore_scans` in plain Python) its ``inference.json``: whole scans corrupted and restored.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import Compose, MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type, convert_to_tensor
from torch import nn

from shared.ssl import corruptions
from shared.ssl.inspection import ReconstructionWriter
from shared.ssl.previews import TrainingPreviews

SEED_LIMIT = 2**31 - 1


class _GenesisTransform(RandomizableTransform, MapTransform):
    """The shared part: draw once per call, apply the same corruption to every key present."""

    #: what a call draws, left out of the transform's description (``describe_transform``)
    drawn_attributes: tuple[str, ...] = ("seed",)

    def __init__(self, keys: KeysCollection, prob: float, allow_missing_keys: bool):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.seed = 0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.seed = int(self.R.randint(SEED_LIMIT))  # the bulk random numbers (torch) follow from it

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def corrupt(self, volume: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        first = next(self.key_iterator(result), None)
        if first is None:
            return result
        volume = convert_to_tensor(result[first], track_meta=False)
        if volume.ndim != 4:
            raise ValueError(f"{type(self).__name__}: key {first!r} must be channel-first (C, X, Y, Z), "
                             f"got shape {tuple(volume.shape)}")
        self.randomize_for(volume)
        if not self._do_transform:
            return result
        for key in self.key_iterator(result):
            corrupted = self.corrupt(convert_to_tensor(result[key], track_meta=False))
            result[key] = convert_to_dst_type(corrupted, result[key])[0]
        return result

    def randomize_for(self, volume: torch.Tensor) -> None:
        """Draws this call's parameters; subclasses that need the volume's shape extend it."""
        self.randomize()


class RandGenesisFlipd(_GenesisTransform):
    """Models Genesis' flip: while a coin with ``prob`` says so (at most ``max_flips`` times), flip a random axis.

    So the volume is flipped at least once with probability ``prob``; flipping one axis twice undoes it.

    Args:
        keys: keys to flip (the same flips for all).
        prob: probability of the first flip and of each further one (0.4 in the paper).
        max_flips: most flips per call (3).
        allow_missing_keys: skip absent keys.
    """

    drawn_attributes = (*_GenesisTransform.drawn_attributes, "axes")

    def __init__(self, keys: KeysCollection, prob: float = 0.4, max_flips: int = 3, allow_missing_keys: bool = False):
        super().__init__(keys, prob, allow_missing_keys)
        self.max_flips = int(max_flips)
        self.axes: list[int] = []

    def randomize_for(self, volume: torch.Tensor) -> None:
        self.axes = []
        while len(self.axes) < self.max_flips and self.R.random_sample() < self.prob:
            self.axes.append(int(self.R.randint(volume.ndim - 1)))
        self._do_transform = bool(self.axes)

    def corrupt(self, volume: torch.Tensor) -> torch.Tensor:
        odd = [axis + 1 for axis in range(volume.ndim - 1) if self.axes.count(axis) % 2]
        return torch.flip(volume, odd) if odd else volume.clone()


class RandLocalShuffled(_GenesisTransform):
    """Local voxel shuffling: the voxels inside many small random windows are permuted.

    Args:
        keys: keys to shuffle (the same windows and permutations for all).
        prob: probability of shuffling (0.5).
        num_windows: windows per volume (10,000).
        max_fraction: largest window edge as a fraction of each axis (1/10).
        allow_missing_keys: skip absent keys.
    """

    drawn_attributes = (*_GenesisTransform.drawn_attributes, "windows")

    def __init__(self, keys: KeysCollection, prob: float = 0.5, num_windows: int = 10000, max_fraction: float = 0.1,
                 allow_missing_keys: bool = False):
        super().__init__(keys, prob, allow_missing_keys)
        self.num_windows, self.max_fraction = int(num_windows), float(max_fraction)
        self.windows: tuple[np.ndarray, np.ndarray] | None = None

    def randomize_for(self, volume: torch.Tensor) -> None:
        self.randomize()
        if self._do_transform:
            self.windows = corruptions.draw_shuffle_windows(volume.shape[1:], self.num_windows, self.R,
                                                            max_fraction=self.max_fraction)

    def corrupt(self, volume: torch.Tensor) -> torch.Tensor:
        return corruptions.shuffle_windows(volume, *self.windows, generator=self.generator())


class RandBezierIntensityd(_GenesisTransform):
    """Non-linear intensity transform: a random monotone cubic Bézier curve on the rescaled intensities.

    Args:
        keys: keys to transform (the same curve for all).
        prob: probability of transforming (0.9).
        invert_prob: probability, once transforming, of the decreasing curve (0.5).
        allow_missing_keys: skip absent keys.
    """

    drawn_attributes = (*_GenesisTransform.drawn_attributes, "controls", "invert")

    def __init__(self, keys: KeysCollection, prob: float = 0.9, invert_prob: float = 0.5,
                 allow_missing_keys: bool = False):
        super().__init__(keys, prob, allow_missing_keys)
        self.invert_prob = float(invert_prob)
        self.controls = np.array([[0.0, 0.0], [1 / 3, 1 / 3], [2 / 3, 2 / 3], [1.0, 1.0]])
        self.invert = False

    def randomize_for(self, volume: torch.Tensor) -> None:
        self.randomize()
        if self._do_transform:
            self.controls = corruptions.draw_bezier_controls(self.R)
            self.invert = bool(self.R.random_sample() < self.invert_prob)

    def corrupt(self, volume: torch.Tensor) -> torch.Tensor:
        return corruptions.bezier_intensity(volume, self.controls, invert=self.invert)


class RandInOutPaintd(_GenesisTransform):
    """In-painting (noise inside a few boxes) or out-painting (noise outside a few boxes).

    Args:
        keys: keys to paint (the same boxes and noise for all).
        prob: probability of painting at all (0.9).
        inpaint_prob: probability, once painting, of in-painting rather than out-painting (0.2).
        max_boxes: most boxes (5).
        allow_missing_keys: skip absent keys.
    """

    drawn_attributes = (*_GenesisTransform.drawn_attributes, "inpainting", "boxes")

    def __init__(self, keys: KeysCollection, prob: float = 0.9, inpaint_prob: float = 0.2, max_boxes: int = 5,
                 allow_missing_keys: bool = False):
        super().__init__(keys, prob, allow_missing_keys)
        self.inpaint_prob, self.max_boxes = float(inpaint_prob), int(max_boxes)
        self.inpainting = False
        self.boxes = np.zeros((0, 6), dtype=np.int64)

    def randomize_for(self, volume: torch.Tensor) -> None:
        self.randomize()
        if self._do_transform:
            self.inpainting = bool(self.R.random_sample() < self.inpaint_prob)
            draw = corruptions.draw_inpainting_boxes if self.inpainting else corruptions.draw_outpainting_boxes
            self.boxes = draw(volume.shape[1:], self.R, max_boxes=self.max_boxes)

    def corrupt(self, volume: torch.Tensor) -> torch.Tensor:
        paint = corruptions.inpaint if self.inpainting else corruptions.outpaint
        return paint(volume, self.boxes, generator=self.generator())


def genesis_corruptions(keys: KeysCollection = "image", target_key: str = "target") -> list:
    """The Models Genesis pipeline with the paper's probabilities, as a list of MONAI transforms.

    For Python users and tests; a bundle lists the same transforms in its JSON.

    Args:
        keys: the image key(s).
        target_key: where the clean (flipped) copy goes; a single image key is required.

    Returns:
        ``[RandGenesisFlipd, CopyItemsd, RandLocalShuffled, RandBezierIntensityd, RandInOutPaintd]``.
    """
    from monai.transforms import CopyItemsd

    return [
        RandGenesisFlipd(keys, prob=0.4),
        CopyItemsd(keys, names=target_key),
        RandLocalShuffled(keys, prob=0.5),
        RandBezierIntensityd(keys, prob=0.9),
        RandInOutPaintd(keys, prob=0.9),
    ]


class ModelsGenesis(nn.Module):
    """Wraps a restoration network (C → C channels): MSE over all voxels against the clean target.

    Args:
        network: dense network mapping (B, C, X, Y, Z) to (B, C, X, Y, Z), e.g. the ResEnc U-Net;
            its ``encoder`` is what gets exported after pre-training.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    @property
    def encoder(self) -> nn.Module:
        """The wrapped network's encoder (what ``export_encoder`` saves)."""
        return self.network.encoder

    def forward(self, images: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Restores a corrupted batch and scores it.

        Args:
            images: the corrupted input.
            target: the clean volume (flipped like the input, not corrupted).

        Returns:
            ``{"loss": scalar, "reconstruction": (B, C, X, Y, Z)}``.

        Shape:
            images, target: (B, C, X, Y, Z).
        """
        if images.ndim != 5 or images.shape != target.shape:
            raise ValueError(f"expected images and target (B, C, X, Y, Z) of one shape, got {tuple(images.shape)} "
                             f"and {tuple(target.shape)}")
        reconstruction = self.network(images)
        if isinstance(reconstruction, (list, tuple)):
            # deep-supervision networks return the full-resolution output first
            reconstruction = reconstruction[0]
        loss = nn.functional.mse_loss(reconstruction, target)
        return {"loss": loss, "reconstruction": reconstruction}


def prepare_genesis_batch(batch: dict[str, Any], device: str | torch.device | None = None,
                          non_blocking: bool = False, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's ``prepare_batch`` for :class:`ModelsGenesis`: the corrupted images and the clean target.

    :class:`shared.engines.trainer.LossDictTrainer` then calls ``model(images, target)``.

    Shape:
        batch["image"], batch["target"]: (B, C, X, Y, Z).
    """
    if "target" not in batch:
        raise KeyError("the batch has no 'target': list CopyItemsd(keys='image', names='target') before the "
                       "corruptions in train#preprocessing")
    target = batch["target"]
    if isinstance(target, (list, tuple)):  # collate_detection stacks only the image and the detection keys
        target = torch.stack(list(target))
    return batch["image"].to(device, non_blocking=non_blocking), target.to(device, non_blocking=non_blocking)


GENESIS_TAG = "reconstruction/corrupted_restored_target"


def genesis_preview(corrupted: torch.Tensor, restored: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Corrupted input, restoration and clean target of one slice side by side, in the target's window.

    Returns:
        (1, X, 3 * Y) float32 picture (CHW) in [0, 1].

    Shape:
        corrupted, restored, target: (X, Y, Z); the middle Z slice is shown.
    """
    middle = target.shape[-1] // 2
    panels = [volume[..., middle].detach().float().cpu().numpy() for volume in (corrupted, restored, target)]
    low, high = float(panels[2].min()), float(panels[2].max())
    scale = 1.0 / (high - low) if high > low else 1.0
    return np.concatenate([np.clip((panel - low) * scale, 0.0, 1.0) for panel in panels], axis=1)[None].astype(
        np.float32)


class GenesisPreviews(TrainingPreviews):
    """TensorBoard pictures of Models Genesis training: corrupted input | restoration | clean target.

    A ``train#handlers`` entry like :class:`shared.ssl.previews.ReconstructionPreviews` (same arguments);
    the target comes from the iteration's batch (``engine.state.batch["target"]``).

    Args:
        log_dir: TensorBoard folder (the trainer's is ``output_dir/logs``).
        every: iterations between pictures; the first iteration is always shown.
    """

    def log_forward(self, engine: Any) -> None:
        self(engine)
        if self._due():
            output = engine.state.output
            target = engine.state.batch["target"][0][0]  # a stacked batch or the collated list of samples
            picture = genesis_preview(output["image"][0, 0], output["pred"]["reconstruction"][0, 0], target)
            self.writer.add_image(GENESIS_TAG, picture, self.iteration, dataformats="CHW")
            self.writer.flush()


class RestorationInferer(Inferer):
    """A MONAI inferer that corrupts a whole scan as in pre-training and restores it from its patches.

    The corruptions are the pipeline's after the flip (local shuffle, Bézier intensity, in/out-painting,
    each with the paper's probability, so a scan may come out untouched), drawn on the CPU from a
    generator seeded once: the n-th scan of a run always gets the same corruption. The corrupted scan
    goes through the network by a sliding window of ``patch_size`` tiles.

    Args:
        patch_size: sliding-window tile, a multiple of the network's coarsest stride.
        seed: seed of the corruptions.
        overlap: sliding-window overlap.
        sw_batch_size: tiles per network call.
    """

    def __init__(self, patch_size: Sequence[int], *, seed: int = 0, overlap: float = 0.5, sw_batch_size: int = 1):
        super().__init__()
        self.patch_size = [int(size) for size in patch_size]
        self.overlap, self.sw_batch_size = float(overlap), int(sw_batch_size)
        self.corrupt = Compose(genesis_corruptions()[1:])  # the clean copy into "target", then the corruptions
        self.corrupt.set_random_state(seed=int(seed))

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Corrupt and restore one scan.

        Args:
            inputs: the preprocessed scan.
            network: the restoration network (C → C channels).

        Returns:
            ``input``, ``corrupted``, ``restored`` (1, C, X, Y, Z), ``mse`` (restored vs input) and
            ``corrupted_mse`` (corrupted vs input), floats.

        Shape:
            inputs: (1, C, X, Y, Z).
        """
        from monai.inferers import sliding_window_inference

        if inputs.ndim != 5 or inputs.shape[0] != 1:
            raise ValueError(f"the inferer takes one scan (1, C, X, Y, Z), got {tuple(inputs.shape)}")
        sample = self.corrupt({"image": inputs[0].detach().float().cpu()})
        clean = sample["target"][None].to(inputs.device)
        corrupted = torch.as_tensor(sample["image"])[None].float().to(inputs.device)
        with torch.no_grad():
            restored = sliding_window_inference(corrupted, self.patch_size, self.sw_batch_size, network,
                                                overlap=self.overlap)
        return {"input": clean, "corrupted": corrupted, "restored": restored,
                "mse": float(nn.functional.mse_loss(restored, clean)),
                "corrupted_mse": float(nn.functional.mse_loss(corrupted, clean))}


class RestorationWriter(ReconstructionWriter):
    """Handler: each scan's restoration as NIfTI files, and ``restorations.json`` at the end.

    Per scan (the output of :class:`RestorationInferer` with the scan's ``affine`` and ``sources``):
    ``<case>_input``, ``<case>_corrupted`` and ``<case>_restored`` ``.nii.gz`` (first channel, float32)
    on the preprocessed grid; ``restorations.json`` lists ``{"case", "mse", "corrupted_mse", "files"}``.

    Args:
        output_dir: where the files go.
    """

    def _write_case(self, engine: Any) -> None:
        self.results.append(write_restoration(engine.state.output, self.output_dir, affine_key=self.affine_key,
                                              sources_key=self.sources_key))

    def _write_summary(self, engine: Any) -> None:
        from shared.io.atomic import write_json

        write_json(self.output_dir / "restorations.json", self.results)


def write_restoration(output: dict[str, Any], output_dir: str | os.PathLike, *, affine_key: str = "affine",
                      sources_key: str = "sources") -> dict[str, Any]:
    """One scan's three NIfTI files (see :class:`RestorationWriter`); returns its ``restorations.json`` entry."""
    from shared.data.validate import case_id
    from shared.io.images import save_nifti

    case = case_id(output[sources_key])
    affine = np.asarray(output[affine_key], dtype=np.float64)
    files = {name: str(save_nifti(Path(output_dir) / f"{case}_{name}.nii.gz",
                                  torch.as_tensor(output[name])[0, 0].detach().float().cpu().numpy(), affine))
             for name in ("input", "corrupted", "restored")}
    return {"case": case, "mse": float(output["mse"]), "corrupted_mse": float(output["corrupted_mse"]), "files": files}


def restore_scans(network: nn.Module, images: Sequence[str | Sequence[str]], output_dir: str | os.PathLike, *,
                  plan: dict[str, Any], patch_size: Sequence[int], seed: int = 0,
                  device: str | torch.device = "cpu", overlap: float = 0.5) -> list[dict[str, Any]]:
    """Corrupt and restore every scan in plain Python (the bundle's infer workflow without MONAI's engine).

    Args:
        network: the restoration network (C → C channels).
        images: scans (one path, or one per channel).
        output_dir: where the files of :class:`RestorationWriter` go.
        plan: ``target_spacing`` and ``channels`` (:func:`shared.ssl.inspection.plan_from_manifest`).
        patch_size: sliding-window size, a multiple of the network's coarsest stride.
        seed: seed of the corruptions.
        device: where the network runs.
        overlap: sliding-window overlap.

    Returns:
        One ``{"case", "mse", "corrupted_mse", "files"}`` per scan.
    """
    from shared.data.preprocess import preprocess_volume
    from shared.io.atomic import write_json
    from shared.io.images import load_volume

    network = network.to(device).eval()
    inferer = RestorationInferer(patch_size, seed=seed, overlap=overlap)
    results = []
    for image in images:
        volume = load_volume(image)
        array, affine = preprocess_volume(volume, plan)
        found = inferer(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None].to(device), network)
        results.append(write_restoration({**found, "affine": affine, "sources": volume.sources}, output_dir))
    write_json(Path(output_dir) / "restorations.json", results)
    return results
