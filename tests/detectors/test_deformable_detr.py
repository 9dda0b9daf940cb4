import numpy as np
import pytest
import torch
from monai.data.box_utils import box_iou
from torch import nn

from shared.detectors.deformable_detr import DeformableDETRDetector, objects_per_patch, plan_queries
from shared.detectors.export import exported_detections, trace_detector
from shared.networks.deformable_detr import DeformableDETRNetwork
from tests.networks.test_deformable_detr import TINY


class FixedQueries(nn.Module):
    """Returns given per-query logits and normalised boxes for every image."""

    def __init__(self, logits, boxes):
        super().__init__()
        self.num_classes = logits.shape[-1]
        self.logits, self.boxes = nn.Parameter(logits), nn.Parameter(boxes)

    def forward(self, images):
        batch = images.shape[0]
        return {"class_logits": [self.logits.expand(batch, -1, -1)], "boxes": [self.boxes.expand(batch, -1, -1)]}


def _tiny_detector(**options):
    torch.manual_seed(0)
    return DeformableDETRDetector(DeformableDETRNetwork(1, 1, **{**TINY, "num_queries": 8}), **options)


def test_predict_gives_voxel_boxes_inside_the_patch():
    logits = torch.tensor([[[3.0, -5.0], [-5.0, 1.0], [-9.0, -9.0]]])
    boxes = torch.tensor([[[0.5, 0.25, 1.0, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.25, 0.25, 0.25], [0.5] * 6]])
    detector = DeformableDETRDetector(FixedQueries(logits, boxes), score_threshold=0.05).eval()
    detections = detector.predict(torch.zeros(2, 1, 16, 8, 32))
    assert len(detections) == 2
    found = detections[0]
    assert found["labels"].dtype == torch.int64 and found["labels"].tolist() == [0, 1]
    torch.testing.assert_close(found["scores"], torch.sigmoid(torch.tensor([3.0, 1.0])))
    # (cx, cy, cz, w, h, d) · (16, 8, 32): z reaches 40, clipped to the patch's 32
    torch.testing.assert_close(found["boxes"], torch.tensor([[4.0, 0.0, 24.0, 12.0, 4.0, 32.0],
                                                             [6.0, 3.0, 12.0, 10.0, 5.0, 20.0]]))
    assert detector(torch.zeros(1, 1, 16, 8, 32))[0]["boxes"].shape == (2, 6)  # eval forward = predict
    small = DeformableDETRDetector(FixedQueries(logits, boxes), score_threshold=0.05, min_size=3.0)
    assert small.predict(torch.zeros(1, 1, 16, 8, 32))[0]["labels"].tolist() == [0]  # 2-voxel side dropped
    top = DeformableDETRDetector(FixedQueries(logits, boxes), score_threshold=0.0, detections_per_image=4)
    assert len(top.predict(torch.zeros(1, 1, 16, 8, 32))[0]["scores"]) == 4


def test_real_network_predictions_lie_in_the_patch():
    detector = _tiny_detector(score_threshold=0.0).eval()
    for found in detector.predict(torch.randn(2, 1, 16, 16, 16)):
        assert found["boxes"].shape == (8, 6) and found["scores"].shape == found["labels"].shape == (8,)
        assert (found["boxes"] >= 0).all() and (found["boxes"] <= 16).all()
        assert (found["boxes"][:, 3:] >= found["boxes"][:, :3]).all()


def test_training_losses_with_and_without_objects():
    detector = _tiny_detector().train()
    targets = {"boxes": [torch.tensor([[2.0, 3.0, 4.0, 8.0, 9.0, 10.0]]), np.zeros((0, 6), np.float32)],
               "labels": [torch.tensor([0]), np.zeros(0, np.int64)]}
    losses = detector(torch.randn(2, 1, 16, 16, 16), targets)
    assert {"loss", "classification", "box_l1", "box_giou", "classification_0", "box_giou_proposals"} <= set(losses)
    losses["loss"].backward()
    empty = {"boxes": [torch.zeros(0, 6)] * 2, "labels": [torch.zeros(0, dtype=torch.long)] * 2}
    assert float(detector(torch.randn(2, 1, 16, 16, 16), empty)["box_l1"]) == 0.0
    with pytest.raises(ValueError, match="labels"):
        detector(torch.randn(1, 1, 16, 16, 16), {"boxes": [torch.ones(1, 6)], "labels": [torch.tensor([3])]})
    with pytest.raises(ValueError, match="targets"):
        detector(torch.randn(1, 1, 16, 16, 16))


def test_export_gives_the_predictions():
    detector = _tiny_detector(score_threshold=0.0).eval()
    assert detector.output_spec.outputs[0].num_channels == 1 + 6
    images = torch.randn(1, 1, 16, 16, 16)
    traced = trace_detector(detector, images)
    exported, predicted = exported_detections(detector, traced, images)[0], detector.predict(images)[0]
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(exported[key], predicted[key])
    with pytest.raises(ValueError, match="channels"):
        detector.detections_from_outputs((torch.zeros(1, 5, 8),), (16, 16, 16))


def test_a_tiny_model_overfits_one_patch():
    detector = _tiny_detector(score_threshold=0.0)
    image = torch.zeros(1, 1, 16, 16, 16)
    boxes = torch.tensor([[2.0, 3.0, 4.0, 7.0, 8.0, 10.0], [9.0, 8.0, 6.0, 14.0, 14.0, 12.0]])
    for box in boxes.long():
        image[0, 0, box[0]:box[3], box[1]:box[4], box[2]:box[5]] = 1.0
    image = image + 0.1 * torch.randn(image.shape, generator=torch.Generator().manual_seed(1))
    targets = {"boxes": [boxes], "labels": [torch.tensor([0, 0])]}
    optimizer = torch.optim.AdamW(detector.network.parameters(), lr=1e-3)

    def best_iou():
        found = detector.eval().predict(image)[0]
        detector.train()
        return box_iou(found["boxes"][:2], boxes).amax(dim=0)  # the two top detections vs. each target

    first_iou, losses = best_iou(), []
    for _ in range(100):
        loss = detector(image, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    last_iou = best_iou()
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5])
    assert (last_iou > 0.7).all() and (first_iou < 0.3).all()


def test_plan_queries():
    assert plan_queries([1] * 99 + [10]) == {"num_queries": 16}  # 3 × 1 below the floor
    assert plan_queries([0, 5, 6, 7, 8] * 20) == {"num_queries": 24}  # 3 × 8
    assert plan_queries([np.zeros((4, 6))] * 10, minimum=1) == {"num_queries": 12}  # boxes count as objects
    assert plan_queries([], minimum=5) == {"num_queries": 5}
    with pytest.raises(ValueError, match="factor"):
        plan_queries([1], factor=0)


def test_objects_per_patch_counts_the_neighbours_a_patch_holds():
    case = np.array([[0, 0, 0, 2, 2, 2], [6, 0, 0, 8, 2, 2], [40, 40, 40, 42, 42, 42]], np.float32)
    assert objects_per_patch([case, np.zeros((0, 6))], (16, 16, 16)) == [2, 2, 1, 0]
    assert objects_per_patch([case], (4, 4, 4)) == [1, 1, 1]


def test_runs_through_sliding_window_inference_and_build_network():
    from shared.bundles.network import build_network
    from shared.inference.sliding_window import predict_volume

    torch.manual_seed(0)
    network = build_network("shared.networks.deformable_detr.DeformableDETRNetwork", in_channels=1, num_classes=1,
                            **{**TINY, "num_queries": 8})
    detector = DeformableDETRDetector(network, score_threshold=0.0)
    found = predict_volume(detector, torch.randn(1, 24, 20, 16), patch_size=(16, 16, 16), mirror=True,
                           score_threshold=0.0)
    assert len(found["boxes"]) > 0 and found["labels"].dtype == torch.int64
    assert (found["boxes"] >= 0).all() and (found["boxes"] <= torch.tensor([24, 20, 16] * 2)).all()
