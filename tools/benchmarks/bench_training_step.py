"""Where one training step's time goes, for the detector bundles' quick configurations, beside MONAI's
``RetinaNetDetector`` on the same patches.

Our pieces come from the bundles' own configs (``train.json`` + ``quick.json``, parsed with MONAI's
``ConfigParser``): the ``train#dataloader`` (patch sampling and transforms from the preprocessed cache),
the ``detector`` (network, anchors, ATSS matching, losses), the ``optimizer`` and ``gradient_clip``. The
step is the one :class:`shared.engines.trainer.LossDictTrainer` runs (batch preparation, the detector
called with targets, backward, clipping, optimizer step; no autocast on the CPU), cut into phases:

- ``data``: the next batch from the data loader, moved to the device;
- ``forward``: the network alone (timed by hooks on it);
- ``losses``: the rest of the detector call: anchors, matching (also shown alone), box coding, losses;
- ``backward`` and ``optimizer`` (gradient clipping, step, zeroing the gradients).

MONAI's step is its detection tutorial's (``retinanet_detector`` with a ResNet-50 + FPN feature
extractor on layers 1 and 2, ``AnchorGeneratorWithAnchorShape``, ATSS matcher, hard negative sampler,
focal and smooth-L1 losses, SGD), on the same batches and device, with ``conv1_t_stride`` 2 on every axis
(the embedded data is isotropic). Its ``forward`` is its network, ``losses`` the rest of its call. The
step times are means over ``steps`` steps after ``warmup`` steps::

    python -m tools.make_dataset lung_ct --out /tmp/h3data --num_training 8 --num_validation 1 \\
        --num_test 1 --num_unlabelled 0
    python -m tools.benchmarks.bench_training_step --dataset_dir /tmp/h3data --work_dir /tmp/h3runs

The table is in ``docs/training_speed.md``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fire
import torch
from monai.bundle import ConfigParser
from torch import Tensor, nn

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
DETECTORS = ("retina_unet_detection", "resenc_retina_unet_detection")
PHASES = ("data", "forward", "losses", "backward", "optimizer")
#: MONAI's detection tutorial (LUNA16): anchors and feature levels
MONAI_ANCHOR_SHAPES = [[6, 8, 4], [8, 6, 5], [10, 10, 6]]
MONAI_RETURNED_LAYERS = [1, 2]


class PhaseClock:
    """Accumulates time per named phase; synchronises CUDA at each boundary so times are real.

    Args:
        device: the device the step runs on.
        kind: ``"wall"`` (elapsed time) or ``"cpu"`` (this process's CPU time over all its threads: steadier
            on a machine other jobs load, but blind to DataLoader worker processes and to the GPU).
    """

    def __init__(self, device: torch.device, kind: str = "wall"):
        if kind not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {kind!r}")
        self.device, self.kind = device, kind
        self.totals: dict[str, float] = defaultdict(float)
        self.recording = True

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() if self.kind == "wall" else time.process_time()

    def add(self, phase: str, seconds: float) -> None:
        if self.recording:
            self.totals[phase] += seconds


class _TimedCall:
    """A callable that adds its own run time to a phase of the clock (for the matcher)."""

    def __init__(self, wrapped: Callable, clock: PhaseClock, phase: str):
        self.wrapped, self.clock, self.phase = wrapped, clock, phase

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = self.clock.now()
        result = self.wrapped(*args, **kwargs)
        self.clock.add(self.phase, self.clock.now() - start)
        return result


def time_module(module: nn.Module, clock: PhaseClock, phase: str) -> None:
    """Add ``module``'s forward time to ``phase`` (hooks; the module itself is untouched)."""
    starts: list[float] = []
    module.register_forward_pre_hook(lambda *_: starts.append(clock.now()))
    module.register_forward_hook(lambda *_: clock.add(phase, clock.now() - starts.pop()))


def bundle_parser(bundle: str, dataset_dir: str, work_dir: str, device: torch.device) -> ConfigParser:
    """The bundle's ``train.json`` + ``quick.json`` with the data, output folder and device set."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / name) for name in ("train.json", "quick.json")])
    parser["dataset_dir"] = str(dataset_dir)
    parser["output_dir"] = str(Path(work_dir) / bundle)
    parser["device"] = f"$torch.device('{device}')"
    return parser


def _batches(loader: Iterator, prepare_batch: Callable, device: torch.device) -> Iterator:
    for batch in loader:
        yield prepare_batch(batch, device)


def time_our_steps(parser: ConfigParser, clock: PhaseClock, *, warmup: int, steps: int) -> list[tuple[Tensor, dict]]:
    """Run ``warmup + steps`` training steps of the bundle's detector; phase times go to ``clock``.

    Returns:
        the measured batches (images, targets), for MONAI's detector to run on.
    """
    detector = parser.get_parsed_content("detector")
    optimizer = parser.get_parsed_content("optimizer")
    prepare_batch = parser.get_parsed_content("train#trainer#prepare_batch")
    gradient_clip = parser.get_parsed_content("gradient_clip")
    loader = _batches(iter(parser.get_parsed_content("train#dataloader")), prepare_batch, clock.device)
    time_module(detector.network, clock, "forward")
    detector.matcher = _TimedCall(detector.matcher, clock, "matching")
    detector.train()
    kept = []
    for step in range(warmup + steps):
        clock.recording = step >= warmup
        start = clock.now()
        images, targets = next(loader)
        clock.add("data", clock.now() - start)
        if clock.recording:
            kept.append((images, targets))
        start = clock.now()
        losses = detector(images, targets)
        clock.add("detector", clock.now() - start)
        start = clock.now()
        losses["loss"].backward()
        clock.add("backward", clock.now() - start)
        start = clock.now()
        if gradient_clip:
            torch.nn.utils.clip_grad_norm_(detector.parameters(), gradient_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.add("optimizer", clock.now() - start)
    clock.totals["losses"] = clock.totals.pop("detector") - clock.totals["forward"]
    return kept


class _ResNetFeatures(nn.Module):
    """MONAI's ``BackboneWithFPN`` without torchvision: the ResNet's children up to the last returned
    layer, then MONAI's ``FeaturePyramidNetwork`` with a max-pooled extra level (what
    ``resnet_fpn_feature_extractor`` builds; that function needs torchvision to check its arguments)."""

    def __init__(self, backbone: nn.Module, returned_layers: Sequence[int], spatial_dims: int = 3):
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        names = {f"layer{k}": str(index) for index, k in enumerate(returned_layers)}
        self.body = nn.ModuleDict()
        self.returned = dict(names)
        for name, child in backbone.named_children():
            self.body[name] = child
            names.pop(name, None)
            if not names:
                break
        channels = backbone.in_planes // 8
        self.fpn = FeaturePyramidNetwork(spatial_dims=spatial_dims,
                                         in_channels_list=[channels * 2 ** (k - 1) for k in returned_layers],
                                         out_channels=256, extra_blocks=LastLevelMaxPool(spatial_dims))
        self.out_channels = 256

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = OrderedDict()
        for name, child in self.body.items():
            images = child(images)
            if name in self.returned:
                features[self.returned[name]] = images
        return self.fpn(features)


def _without_torchvision_samplers() -> None:
    """Let MONAI's detector train with the ATSS matcher and hard negative sampler when torchvision is absent.

    Its training step tests ``isinstance(matcher, torchvision's Matcher)`` (and the same for the balanced
    sampler) before reaching the ATSS branch; with torchvision missing those names are placeholders that
    raise. Classes nothing is an instance of give the same branch torchvision would.
    """
    from monai.apps.detection.networks import retinanet_detector
    from monai.utils import optional_import

    for name in ("Matcher", "BalancedPositiveNegativeSampler"):
        if not optional_import("torchvision.models.detection._utils", name=name)[1]:
            setattr(retinanet_detector, name, type(name, (), {}))


def monai_detector(num_classes: int, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    """MONAI's ``RetinaNetDetector`` and SGD as its detection tutorial builds them (3-D, ResNet-50 + FPN)."""
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
    from monai.networks.nets import resnet

    _without_torchvision_samplers()
    stride = [2, 2, 2]
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=[2**level for level in range(len(MONAI_RETURNED_LAYERS) + 1)],
        base_anchor_shapes=MONAI_ANCHOR_SHAPES)
    backbone = resnet.ResNet(block=resnet.ResNetBottleneck, layers=[3, 4, 6, 3], block_inplanes=resnet.get_inplanes(),
                             n_input_channels=1, conv1_t_stride=stride, conv1_t_size=[7, 7, 7])
    network = RetinaNet(spatial_dims=3, num_classes=num_classes, num_anchors=anchors.num_anchors_per_location()[0],
                        feature_extractor=_ResNetFeatures(backbone, MONAI_RETURNED_LAYERS),
                        size_divisible=[s * 2 * 2 ** max(MONAI_RETURNED_LAYERS) for s in stride])
    detector = RetinaNetDetector(network=network, anchor_generator=anchors, debug=False)
    detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
    detector.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
    detector.set_target_keys(box_key="boxes", label_key="labels")
    detector = detector.to(device)
    optimizer = torch.optim.SGD(detector.network.parameters(), lr=1e-2, momentum=0.9, weight_decay=3e-5, nesterov=True)
    return detector, optimizer


def time_monai_steps(batches: list[tuple[Tensor, dict]], num_classes: int, clock: PhaseClock, *,
                     warmup: int) -> None:
    """Warm-up steps, then one step per batch of MONAI's detector; phase times go to ``clock``."""
    detector, optimizer = monai_detector(num_classes, clock.device)
    time_module(detector.network, clock, "forward")
    # its matching of every image of the batch (the ATSS matcher is called inside this method)
    detector.compute_anchor_matched_idxs = _TimedCall(detector.compute_anchor_matched_idxs, clock, "matching")
    detector.train()
    for step in range(warmup + len(batches)):
        clock.recording = step >= warmup
        images, targets = batches[max(step - warmup, 0)]
        start = clock.now()
        monai_targets = [{"boxes": boxes, "labels": labels} for boxes, labels in zip(targets["boxes"], targets["labels"])]
        clock.add("data", clock.now() - start)  # the shared batch, re-labelled: no data time of its own
        start = clock.now()
        losses = detector(images, monai_targets)
        loss = losses[detector.cls_key] + losses[detector.box_reg_key]
        clock.add("detector", clock.now() - start)
        start = clock.now()
        loss.backward()
        clock.add("backward", clock.now() - start)
        start = clock.now()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.add("optimizer", clock.now() - start)
    clock.totals["losses"] = clock.totals.pop("detector") - clock.totals["forward"]


def format_table(rows: dict[str, dict[str, float]], steps: int) -> str:
    """A Markdown table: milliseconds per step for each phase, the step, and the step's ratio to MONAI's."""
    monai_step = sum(rows["MONAI RetinaNetDetector"][p] for p in PHASES) / steps
    header = ["configuration", *(f"{p} ms" for p in PHASES), "of losses: matching ms", "step ms", "step / MONAI's"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, totals in rows.items():
        step = sum(totals[p] for p in PHASES) / steps
        cells = [f"{1000 * totals[p] / steps:.0f}" for p in PHASES]
        matching = f"{1000 * totals['matching'] / steps:.0f}"
        lines.append("| " + " | ".join([name, *cells, matching, f"{1000 * step:.0f}", f"{step / monai_step:.2f}"]) + " |")
    return "\n".join(lines)


def benchmark(dataset_dir: str = "/tmp/h3data", work_dir: str = "/tmp/h3runs", warmup: int = 10, steps: int = 20,
              bundles: Sequence[str] = DETECTORS, threads: int | None = None, device: str | None = None,
              clock: str = "wall") -> None:
    """Print the per-phase table of the bundles' quick training step and MONAI's.

    Args:
        dataset_dir: a data set made by ``tools.make_dataset`` (its ``datalist.json``); the quick configs
            expect the embedded lung task.
        work_dir: where each bundle's cache and model plan go (``<work_dir>/<bundle>``).
        warmup: steps run before timing.
        steps: timed steps (means over them).
        bundles: detector bundles to time.
        threads: torch's intra-op threads (default: torch's own choice).
        device: ``cpu`` or ``cuda``; default cuda when available.
        clock: ``wall`` or ``cpu`` (see :class:`PhaseClock`).
    """
    if threads:
        torch.set_num_threads(int(threads))
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows, batches, num_classes = {}, None, 1
    for bundle in bundles:
        torch.manual_seed(0)
        parser = bundle_parser(bundle, dataset_dir, work_dir, torch_device)
        parser.get_parsed_content("data")  # preprocessing and planning, outside the timing
        phase_clock = PhaseClock(torch_device, clock)
        measured = time_our_steps(parser, phase_clock, warmup=warmup, steps=steps)
        rows[f"{bundle} (quick)"] = dict(phase_clock.totals)
        batches, num_classes = batches or measured, parser.get_parsed_content("num_classes")
        print(f"{bundle}: {1000 * sum(phase_clock.totals[p] for p in PHASES) / steps:.0f} ms per step", flush=True)
    torch.manual_seed(0)
    phase_clock = PhaseClock(torch_device, clock)
    time_monai_steps(batches, num_classes, phase_clock, warmup=warmup)
    rows["MONAI RetinaNetDetector"] = dict(phase_clock.totals)
    print(f"device {torch_device}, {torch.get_num_threads()} torch threads, {clock} clock, patch "
          f"{tuple(batches[0][0].shape[2:])}, batch {batches[0][0].shape[0]}, mean of {steps} steps after {warmup} "
          f"warm-up steps\n{format_table(rows, steps)}", flush=True)


if __name__ == "__main__":
    fire.Fire(benchmark)
