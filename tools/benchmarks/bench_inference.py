"""Per-scan inference time and peak memory: our pipeline against MONAI's ``RetinaNetDetector``.

    python -m tools.benchmarks.bench_inference [--preset small] [--encoder plain,resenc]
        [--shape 400,400,300] [--spacing 0.8,0.8,1.0] [--patch 64] [--threads 1] [--device cpu]
        [--busy true]

One synthetic CT scan (int16 HU values, ``shape`` voxels at ``spacing`` mm) is resampled to 1 mm, so the
default is a 320 × 320 × 300 grid at 1 mm. The networks have random weights (timing does not depend on
them). Each run happens in a fresh process (its own imports, its own peak memory):

- ``ours``: :class:`shared.engines.inference.ScanPredictor` on the loaded scan: preprocessing
  (resampling + normalisation), then :func:`predict_volume` (tiles, forward passes, per-tile
  post-processing, weighted box clustering), its ``timings`` splitting the time;
- ``MONAI``: ``RetinaNetDetector.forward(use_inferer=True)`` on the preprocessed volume, with a
  ``RetinaNet`` whose feature extractor is our encoder + UFPN decoder (no torchvision), MONAI's heads,
  ``AnchorGeneratorWithAnchorShape`` with the same 27 anchor shapes, the same patch, overlap and tile
  batch; the network call is timed by a forward hook, the rest (stitching the dense head maps of the
  whole scan, anchors, decoding, NMS) is its post-processing.

``busy`` sets every classification bias to 0 (scores near 0.5 everywhere), so each tile saturates the
top-k candidates and NMS: the worst case for post-processing. Without it the heads keep their prior
(0.01) and random weights find almost nothing above the score threshold: the best case. A trained
network lies in between.

Prints a markdown table: seconds per stage, overhead = (total − forward) / forward, peak resident memory
of the process (and peak CUDA memory on a GPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tools.benchmarks.bench_preprocessing import _peak_mib as peak_rss_mib

#: the quick bundles' settings at each preset (decoder width, detection strides)
PRESET_SETTINGS = {"small": (32, [4, 8, 16]), "paper": (128, [4, 8, 16, 32])}
RUNS = ("ours", "MONAI")
TARGET_SPACING = (1.0, 1.0, 1.0)
#: first-level anchor sizes per axis (voxels), like a fitted nodule data set
ANCHOR_SIZES = (4.0, 6.0, 8.0)


def build_network(encoder: str, preset: str, *, busy: bool):
    """A Retina U-Net with random weights (2 classes, 27 anchors, as in the bundles)."""
    from shared.networks.retina_unet import RetinaUNetNetwork

    torch.manual_seed(0)
    channels, strides = PRESET_SETTINGS[preset]
    network = RetinaUNetNetwork(1, 2, encoder={"name": encoder, "preset": preset}, decoder_channels=channels,
                                detection_strides=strides)
    if busy:
        _zero_classification_bias(network)
    return network


def _zero_classification_bias(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if ("cls" in name or "classification" in name) and name.endswith("bias"):
                parameter.zero_()


class UFPNFeatures(torch.nn.Module):
    """MONAI ``RetinaNet`` feature extractor: our encoder + decoder, the detection levels as a list."""

    def __init__(self, network, out_channels: int):
        super().__init__()
        self.encoder, self.decoder = network.encoder, network.decoder
        self.indices = [network._output_index[stride] for stride in network.detection_strides]
        self.out_channels = out_channels  # RetinaNet sizes its heads from this attribute

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        decoded = self.decoder(self.encoder(images))
        return [decoded[index] for index in self.indices]


def build_monai(encoder: str, preset: str, patch: tuple[int, ...], batch_size: int, *, busy: bool):
    """MONAI's detector around our backbone; returns (detector, its network)."""
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    ours = build_network(encoder, preset, busy=busy)
    channels, strides = PRESET_SETTINGS[preset]
    features = UFPNFeatures(ours, channels)
    network = RetinaNet(spatial_dims=3, num_classes=2, num_anchors=27, feature_extractor=features,
                        size_divisible=max(strides))
    if busy:
        _zero_classification_bias(network.classification_head)
    # the same 27 anchor shapes as ours at the first level, scaled by 2 per level like ours
    shapes = anchor_shapes()
    generator = AnchorGeneratorWithAnchorShape(feature_map_scales=[s // strides[0] for s in strides],
                                               base_anchor_shapes=shapes)
    detector = RetinaNetDetector(network, generator, debug=False)
    detector.set_sliding_window_inferer(roi_size=list(patch), sw_batch_size=batch_size, overlap=0.5,
                                        mode="gaussian", sigma_scale=0.25)
    detector.set_box_selector_parameters(score_thresh=0.05, topk_candidates_per_level=1000, nms_thresh=0.6,
                                         detections_per_img=100)
    return detector.eval(), network


def anchor_shapes() -> list[tuple[int, int, int]]:
    """27 anchor shapes (3 sizes per axis), the combinations our generator makes of ``ANCHOR_SIZES``."""
    return [(x, y, z) for x in ANCHOR_SIZES for y in ANCHOR_SIZES for z in ANCHOR_SIZES]


def synthetic_scan(shape: tuple[int, ...], spacing: tuple[float, ...]):
    """A chest-like int16 CT (body ellipse, noise, a few nodules) as a loaded ``Volume``."""
    from shared.io.images import Volume

    rng = np.random.default_rng(0)
    x, y = np.ogrid[: shape[0], : shape[1]]
    body = ((x - shape[0] / 2) / (0.45 * shape[0])) ** 2 + ((y - shape[1] / 2) / (0.35 * shape[1])) ** 2 < 1
    array = rng.normal(0, 30, size=shape).astype(np.float32)
    array[~body] = -1000
    for _ in range(5):
        centre = [int(rng.integers(s // 3, 2 * s // 3)) for s in shape]
        array[tuple(slice(c - 5, c + 5) for c in centre)] += 400
    affine = np.diag([*spacing, 1.0])
    return Volume(np.round(array)[None].astype(np.int16).astype(np.float32), affine, ["synthetic"])


def _plan() -> dict:
    return {"target_spacing": list(TARGET_SPACING),
            "channels": [{"modality": "CT", "clip": [-1000.0, 500.0], "mean": -300.0, "std": 400.0}]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(args: dict, device: torch.device) -> dict:
    from shared.data.preprocess import preprocess_volume
    from shared.detectors.retina_unet import RetinaUNetDetector
    from shared.inference.sliding_window import predict_volume

    patch = (args["patch"],) * 3
    detector = RetinaUNetDetector(build_network(args["encoder"], args["preset"], busy=args["busy"]),
                                  anchor_sizes=[list(ANCHOR_SIZES)] * 3).to(device).eval()
    volume = synthetic_scan(tuple(args["shape"]), tuple(args["spacing"]))
    _warm_up(detector.network, patch, device)
    start = time.perf_counter()
    array, _ = preprocess_volume(volume, _plan())
    image = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    preprocessing = time.perf_counter() - start
    timings: dict = {}
    result = predict_volume(detector, image, patch_size=patch, batch_size=args["batch_size"], timings=timings)
    _sync(device)
    total = time.perf_counter() - start
    # the forward clock stops before CUDA finishes; the post-processing right after waits for it
    return {"preprocessing": preprocessing, "forward": timings["forward"],
            "post": timings["postprocess"] + timings["consolidation"], "total": total,
            "tiles": timings["streams"], "boxes": len(result["boxes"]), "grid": list(image.shape[1:]),
            "parameters": sum(p.numel() for p in detector.network.parameters())}


def run_monai(args: dict, device: torch.device) -> dict:
    from shared.data.preprocess import preprocess_volume

    patch = (args["patch"],) * 3
    detector, network = build_monai(args["encoder"], args["preset"], patch, args["batch_size"], busy=args["busy"])
    detector.to(device)
    clock = {"forward": 0.0, "calls": 0}

    def before(module, inputs):
        _sync(device)
        clock["tic"] = time.perf_counter()

    def after(module, inputs, outputs):
        _sync(device)
        clock["forward"] += time.perf_counter() - clock["tic"]
        clock["calls"] += inputs[0].shape[0]

    _warm_up(network, patch, device)
    network.register_forward_pre_hook(before)
    network.register_forward_hook(after)
    volume = synthetic_scan(tuple(args["shape"]), tuple(args["spacing"]))
    start = time.perf_counter()
    array, _ = preprocess_volume(volume, _plan())
    image = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    preprocessing = time.perf_counter() - start
    with torch.no_grad():
        result = detector([image], use_inferer=True)
    _sync(device)
    total = time.perf_counter() - start
    return {"preprocessing": preprocessing, "forward": clock["forward"],
            "post": total - preprocessing - clock["forward"], "total": total, "tiles": clock["calls"],
            "boxes": len(result[0][detector.target_box_key]), "grid": list(image.shape[1:]),
            "parameters": sum(p.numel() for p in network.parameters())}


def _warm_up(network, patch, device) -> None:
    """One tile through the network first: cuDNN autotuning and lazy allocations are not what we time."""
    with torch.no_grad():
        network.to(device).eval()(torch.zeros(1, 1, *patch, device=device))
    _sync(device)


def _child(which: str, args_json: str) -> None:
    args = json.loads(args_json)
    torch.set_num_threads(int(args["threads"]))
    device = torch.device(args["device"])
    import monai.apps.detection.networks.retinanet_detector  # noqa: F401  imports are not what we measure

    import shared.engines.inference  # noqa: F401

    numbers = run_ours(args, device) if which == "ours" else run_monai(args, device)
    numbers["peak_mib"] = peak_rss_mib()
    if device.type == "cuda":
        numbers["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(numbers))


def _measure(which: str, args: dict) -> dict:
    result = subprocess.run([sys.executable, "-m", "tools.benchmarks.bench_inference", "_child", which,
                             json.dumps(args)], capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS=str(args["threads"])),
                            cwd=Path(__file__).resolve().parents[2])
    if result.returncode:
        raise RuntimeError(f"{which} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _row(name: str, numbers: dict) -> str:
    overhead = (numbers["total"] - numbers["preprocessing"] - numbers["forward"]) / numbers["forward"]
    overall = (numbers["total"] - numbers["forward"]) / numbers["forward"]
    cuda = f" {numbers['cuda_peak_mib']:.0f} |" if "cuda_peak_mib" in numbers else " – |"
    return (f"| {name} | {numbers['parameters'] / 1e6:.2f} M | {numbers['tiles']} | {numbers['preprocessing']:.1f} | "
            f"{numbers['forward']:.1f} | {numbers['post']:.2f} | {numbers['total']:.1f} | {100 * overhead:.1f} % | "
            f"{100 * overall:.1f} % | {numbers['peak_mib']:.0f} |{cuda} {numbers['boxes']} |")


def main(preset: str = "small", encoder: str | tuple = "plain,resenc", shape: str | tuple = "400,400,300",
         spacing: str | tuple = "0.8,0.8,1.0", patch: int | None = None, batch_size: int = 4, threads: int = 1,
         device: str | None = None, busy: bool | str = "both") -> None:
    """Time ours and MONAI's per encoder (and per ``busy`` setting), print the markdown table."""
    encoders = encoder.split(",") if isinstance(encoder, str) else list(encoder)
    shape = [int(v) for v in (shape.split(",") if isinstance(shape, str) else shape)]
    spacing = [float(v) for v in (spacing.split(",") if isinstance(spacing, str) else spacing)]
    patch = int(patch or (64 if preset == "small" else 128))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    modes = [False, True] if busy == "both" else [bool(busy)]
    rows = []
    for name in encoders:
        for mode in modes:
            args = {"preset": preset, "encoder": name, "shape": shape, "spacing": spacing, "patch": patch,
                    "batch_size": batch_size, "threads": threads, "device": device, "busy": mode}
            for which in RUNS:
                numbers = _measure(which, args)
                label = f"{which}: {name} {preset}{' busy' if mode else ''}"
                rows.append(_row(label, numbers))
                print(rows[-1], file=sys.stderr)
    grid = "x".join(map(str, numbers["grid"]))
    print("\n".join([
        f"scan {'x'.join(map(str, shape))} at {spacing} mm → {grid} at 1 mm; patch {patch}³, overlap 0.5, "
        f"{batch_size} tiles per call, {device}, {threads} thread(s), random weights", "",
        "| pipeline | parameters | tiles | preprocessing (s) | network forward (s) | post-processing + "
        "consolidation (s) | total (s) | overhead without preprocessing | overhead with preprocessing | "
        "peak RSS (MiB) | peak CUDA (MiB) | boxes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(sys.argv[2], sys.argv[3])
    else:
        import fire

        fire.Fire(main)
