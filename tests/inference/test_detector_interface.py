"""A toy detector without anchors runs through the same sliding window, inferer, validation, sweep and
export as Retina U-Net: the machinery uses only the detector interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from shared.data.cache import write_case
from shared.data.dataset import ValidationCaseDataset
from shared.detectors.export import exported_detections, trace_detector
from shared.detectors.interface import Detector, ExportedOutput, OutputSpec
from shared.engines.evaluator import DetectionEvaluator
from shared.engines.sampler import ShardSampler
from shared.engines.validation import predict_cases
from shared.inference.inferer import SlidingWindowDetectionInferer
from shared.inference.sliding_window import predict_streams, predict_volume
from shared.metrics.ignite import DetectionMetrics
from tools.sweep_postprocessing import best_setting, collect_streams, sweep_streams

KEY = DetectionMetrics.key_metric
GAIN = 40.0


class HeatmapNetwork(nn.Module):
    """A 3³ convolution gives a centre heat map (logits); one learnt per-axis box size (log voxels)."""

    def __init__(self):
        super().__init__()
        self.heat = nn.Conv3d(1, 1, 3, padding=1)
        self.log_size = nn.Parameter(torch.full((3,), float(np.log(8.0))))
        with torch.no_grad():  # logit = GAIN · (intensity - 0.5): foreground voxels light up
            self.heat.weight.zero_()
            self.heat.weight[0, 0, 1, 1, 1] = GAIN
            self.heat.bias.fill_(-GAIN / 2)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heat(images), self.log_size.expand(images.shape[0], 3)


class CentreHeatmapDetector(Detector):
    """One box per patch: centred at the heat map's probability-weighted centroid, of the learnt size,
    scored by the peak probability; nothing below ``score_threshold`` is kept."""

    score_threshold = 0.05

    def __init__(self):
        super().__init__()
        self.network = HeatmapNetwork()

    def forward(self, images, targets=None):
        if not self.training:
            return self.predict(images)
        logits, log_size = self.network(images)
        heat = torch.zeros_like(logits)
        sizes = []
        for image, boxes in enumerate(targets["boxes"]):
            for box in torch.as_tensor(boxes).reshape(-1, 6).round().long().tolist():
                heat[image, 0, box[0]:box[3], box[1]:box[4], box[2]:box[5]] = 1.0
                sizes.append(torch.tensor(box[3:]) - torch.tensor(box[:3]))
        losses = {"heatmap": F.binary_cross_entropy_with_logits(logits, heat)}
        if sizes:
            losses["size"] = (log_size[:1] - torch.stack(sizes).float().log()).abs().mean()
        losses["loss"] = sum(losses.values())
        return losses

    @torch.no_grad()
    def predict(self, images):
        return self.detections_from_outputs(self.network(images), tuple(images.shape[2:]))

    @property
    def output_spec(self):
        return OutputSpec((ExportedOutput("heatmap", 1, {"0": "centre logit"}),
                           ExportedOutput("log_size", 3, {"0-2": "log box size per axis"})))

    def export_network(self):
        return self.network

    def detections_from_outputs(self, outputs, image_shape):
        self.output_spec.check(outputs)
        logits, log_size = outputs
        probabilities = torch.sigmoid(logits[:, 0])
        grid = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) + 0.5 for n in image_shape), indexing="ij")
        coordinates = torch.stack(grid).to(logits)  # (3, X, Y, Z) voxel centres
        results = []
        for image in range(logits.shape[0]):
            weights = probabilities[image]
            centre = (coordinates * weights).flatten(1).sum(1) / weights.sum().clamp(min=1e-12)
            half = log_size[image].exp() / 2
            boxes = torch.cat([centre - half, centre + half])[None]
            scores = weights.max()[None]
            keep = scores >= self.score_threshold
            results.append({"boxes": boxes[keep], "scores": scores[keep],
                            "labels": torch.zeros(int(keep.sum()), dtype=torch.int64)})
        return results


TRUTH = [20.0, 8.0, 12.0, 28.0, 16.0, 20.0]


def _volume(box=TRUTH, shape=(48, 32, 32)):
    """A cube of ones in zeros; along x it lies wholly inside both tiles of a 32-voxel patch."""
    volume = torch.zeros(1, *shape)
    x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
    volume[0, x0:x1, y0:y1, z0:z1] = 1.0
    return volume


@pytest.mark.parametrize("mirror", [False, True])
def test_sliding_window_finds_the_toy_detectors_box(mirror):
    timings = {}
    found = predict_volume(CentreHeatmapDetector(), _volume(), patch_size=(32, 32, 32), mirror=mirror,
                           timings=timings)
    assert len(found["boxes"]) == 1
    torch.testing.assert_close(found["boxes"][0], torch.tensor(TRUTH), atol=1e-3, rtol=0)
    assert found["scores"].item() == pytest.approx(float(torch.sigmoid(torch.tensor(GAIN / 2))))
    assert timings["streams"] == 2 * (8 if mirror else 1)
    assert timings["forward"] > 0  # the detector's network calls are timed through the interface


def test_toy_detectors_own_filter_bounds_the_final_one():
    with pytest.raises(ValueError, match="score_threshold 0.01 is below the per-tile score_threshold 0.05"):
        predict_volume(CentreHeatmapDetector(), _volume(), patch_size=(32, 32, 32), score_threshold=0.01)
    empty = predict_volume(CentreHeatmapDetector(), torch.zeros(1, 32, 32, 32), patch_size=(32, 32, 32))
    assert empty["boxes"].shape == (0, 6)


def test_inferer_runs_the_toy_detector_on_a_batched_volume():
    inferer = SlidingWindowDetectionInferer([32, 32, 32], {"mirror": False, "cluster_iou": 0.5})
    found = inferer(_volume()[None], CentreHeatmapDetector())
    torch.testing.assert_close(found["boxes"], torch.tensor([TRUTH]), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match=r"expected one volume \(1, C, X, Y, Z\)"):
        inferer(_volume(), CentreHeatmapDetector())
    with pytest.raises(ValueError, match="'overlapp'"):
        SlidingWindowDetectionInferer([32] * 3, {"overlapp": 0.5})


def _validation_cache(tmp_path, cases):
    """Cached validation cases ``name -> (image (C, X, Y, Z), boxes (N, 6))``, all of class 0."""
    for name, (image, boxes) in cases.items():
        record = {"case": name, "split": "validation", "image": [f"/raw/{name}_0000.nii.gz"], "mask": None,
                  "boxes": boxes, "labels": [0] * len(boxes), "instances": None, "shape": list(image.shape[1:]),
                  "affine": np.eye(4).tolist(), "original_affine": np.eye(4).tolist(),
                  "original_shape": list(image.shape[1:]), "cache_key": "test", "entry_sha256": "test"}
        write_case(tmp_path, record, image.numpy(), None)
    return tmp_path


def test_validation_scores_the_toy_detector(tmp_path):
    other = [4.0, 20.0, 4.0, 12.0, 28.0, 12.0]
    cache = _validation_cache(tmp_path, {"a": (_volume(), [TRUTH]), "b": (_volume(other), [other])})
    inferer = SlidingWindowDetectionInferer([32, 32, 32], {"mirror": True})
    # the bundles' validate#dataset, #dataloader and #evaluator, as for Retina U-Net
    dataset = ValidationCaseDataset(cache, ["a", "b"])
    loader = DataLoader(dataset, batch_size=1, sampler=ShardSampler(len(dataset)))
    evaluator = DetectionEvaluator("cpu", loader, CentreHeatmapDetector(), inferer=inferer,
                                   key_val_metric={"detection": DetectionMetrics(["lesion"])})
    evaluator.run()
    assert evaluator.state.key_metric_name == KEY and evaluator.state.metrics[KEY] == pytest.approx(1.0)
    pairs = list(predict_cases(CentreHeatmapDetector(), dataset, inferer))
    assert [len(found["boxes"]) for found, _ in pairs] == [1, 1]


def test_sweep_reclusters_the_toy_detectors_streams(tmp_path):
    cache = _validation_cache(tmp_path, {"a": (_volume(), [TRUTH])})
    streams, targets = collect_streams(CentreHeatmapDetector(), cache, [32, 32, 32], {"mirror": False},
                                       device=torch.device("cpu"))
    assert len(streams) == 1 and len(streams[0].boxes) == 2  # one box from each of the two tiles
    results = sweep_streams(streams, targets, ["lesion"], {"score_threshold": (0.05, 1.5)})
    assert [value for _, value in results] == pytest.approx([1.0, 0.0])
    assert best_setting(results)[0] == {"score_threshold": 0.05}
    # the sweep's streams are the sliding window's
    direct = predict_streams(CentreHeatmapDetector(), _volume(), patch_size=(32, 32, 32))
    torch.testing.assert_close(streams[0].boxes, direct.boxes)


def test_traced_export_of_the_toy_detector_gives_its_predictions():
    detector = CentreHeatmapDetector().eval()
    traced = trace_detector(detector, torch.zeros(1, 1, 32, 32, 32))
    images = torch.stack([_volume(shape=(40, 32, 32)), _volume([4.0, 4.0, 4.0, 12.0, 12.0, 12.0], (40, 32, 32))])
    exported = exported_detections(detector, traced, images)  # a size the trace did not see
    for found, direct in zip(exported, detector.predict(images), strict=True):
        assert len(direct["boxes"]) == 1
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(found[key], direct[key])
    outputs = traced(images)
    with pytest.raises(ValueError, match="declares 2"):
        detector.detections_from_outputs(outputs[:1], (40, 32, 32))


def test_toy_detector_trains_through_the_interface():
    detector = CentreHeatmapDetector().train()
    box = [20.0, 8.0, 12.0, 30.0, 18.0, 22.0]  # larger than the initial size: the size loss has a gradient
    targets = {"boxes": [torch.tensor([box])], "labels": [torch.tensor([0])]}
    losses = detector(_volume(box)[None], targets)
    assert set(losses) == {"heatmap", "size", "loss"}
    losses["loss"].backward()
    for name, parameter in detector.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
