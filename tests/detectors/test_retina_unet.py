from __future__ import annotations

import pytest
import torch
from monai.data.box_utils import box_iou

from shared.detectors.retina_unet import RetinaUNetDetector
from shared.losses.box_regression import DeltaL1Loss, GIoULoss
from shared.losses.classification import FocalClassificationLoss, HardNegativeBCELoss
from shared.losses.segmentation import SegmentationLoss

ANCHORS = [[4.0, 6.0, 8.0]] * 3


def _targets(boxes_per_image, shape=(16, 16, 16)):
    seg = torch.zeros(len(boxes_per_image), 1, *shape, dtype=torch.long)
    boxes, labels = [], []
    for image, image_boxes in enumerate(boxes_per_image):
        image_boxes = torch.tensor(image_boxes, dtype=torch.float32).reshape(-1, 6)
        for box in image_boxes.long():
            seg[image, 0, box[0] : box[3], box[1] : box[4], box[2] : box[5]] = 1
        boxes.append(image_boxes)
        labels.append(torch.zeros(len(image_boxes), dtype=torch.long))
    return {"boxes": boxes, "labels": labels, "seg": seg}


def test_default_losses_are_the_papers_focal_l1_and_segmentation_without_giou(stand_in):
    detector = RetinaUNetDetector(stand_in(), anchor_sizes=ANCHORS).train()
    assert isinstance(detector.classification_loss, FocalClassificationLoss) and detector.giou_loss is None
    assert isinstance(detector.regression_loss, DeltaL1Loss) and detector.regression_loss.beta == 0
    assert isinstance(detector.segmentation_loss, SegmentationLoss)
    losses = detector(torch.randn(1, 1, 16, 16, 16), _targets([[[2, 3, 4, 8, 9, 9]]]))
    assert set(losses) == {"classification", "box_l1", "segmentation", "loss"}


def test_losses_are_finite_for_images_without_boxes(stand_in):
    detector = RetinaUNetDetector(stand_in(), anchor_sizes=ANCHORS, giou_loss=GIoULoss()).train()
    losses = detector(torch.randn(2, 1, 16, 16, 16), _targets([[], []]))
    assert set(losses) == {"classification", "box_l1", "box_giou", "segmentation", "loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["box_l1"] == 0 and losses["box_giou"] == 0
    losses["loss"].backward()


def test_loss_is_the_weighted_sum_and_backward_reaches_every_parameter(stand_in):
    network = stand_in()
    weights = {"classification": 2.0, "box_l1": 0.5, "box_giou": 3.0, "segmentation": 0.25}
    detector = RetinaUNetDetector(network, anchor_sizes=ANCHORS, giou_loss=GIoULoss(), loss_weights=weights).train()
    losses = detector(torch.randn(2, 1, 16, 16, 16), _targets([[[2, 3, 4, 8, 9, 9]], []]))
    expected = sum(weights[name] * losses[name] for name in weights)
    torch.testing.assert_close(losses["loss"], expected)
    assert losses["box_l1"] > 0 and losses["box_giou"] > 0
    losses["loss"].backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert list(detector.state_dict()) == ["network." + key for key in network.state_dict()]


def test_bce_with_hard_negatives_and_no_segmentation(stand_in):
    network = stand_in(num_classes=2, segmentation=False)
    detector = RetinaUNetDetector(
        network, anchor_sizes=ANCHORS, classification_loss=HardNegativeBCELoss(), giou_loss=None
    ).train()
    targets = _targets([[[2, 3, 4, 8, 9, 9]]])
    targets["labels"] = [torch.tensor([1])]
    losses = detector(torch.randn(1, 1, 16, 16, 16), targets)
    assert set(losses) == {"classification", "box_l1", "loss"}
    assert torch.isfinite(losses["loss"])


def test_none_turns_a_loss_term_off_and_a_built_loss_turns_it_on(stand_in):
    detector = RetinaUNetDetector(
        stand_in(), anchor_sizes=ANCHORS, segmentation_loss=None, regression_loss=None, giou_loss=GIoULoss()
    ).train()
    losses = detector(torch.randn(1, 1, 16, 16, 16), _targets([[[2, 3, 4, 8, 9, 9]]]))
    assert set(losses) == {"classification", "box_giou", "loss"}
    with pytest.raises(ValueError, match="classification_loss cannot be None"):
        RetinaUNetDetector(stand_in(), anchor_sizes=ANCHORS, classification_loss=None)


def test_a_string_is_not_a_loss(stand_in):
    # the old "default" sentinel: a string in a config must fail at construction, not in the first step
    with pytest.raises(ValueError, match="regression_loss.*'default'"):
        RetinaUNetDetector(stand_in(), anchor_sizes=ANCHORS, regression_loss="default")


def test_configuration_errors(stand_in):
    with pytest.raises(ValueError, match="27"):
        RetinaUNetDetector(stand_in(), anchor_sizes=[[4.0, 8.0]] * 3)
    with pytest.raises(ValueError, match="unknown loss_weights"):
        RetinaUNetDetector(stand_in(), anchor_sizes=ANCHORS, loss_weights={"cls": 1.0})
    with pytest.raises(ValueError, match="needs targets"):
        RetinaUNetDetector(stand_in(), anchor_sizes=ANCHORS).train()(torch.zeros(1, 1, 16, 16, 16))
    bad_label = _targets([[[2, 3, 4, 8, 9, 9]]])
    bad_label["labels"] = [torch.tensor([1])]  # one class only: label 1 does not exist
    with pytest.raises(ValueError, match="labels"):
        RetinaUNetDetector(stand_in(), anchor_sizes=ANCHORS).train()(torch.zeros(1, 1, 16, 16, 16), bad_label)


def test_eval_mode_returns_detections_per_image(stand_in):
    detector = RetinaUNetDetector(stand_in(), anchor_sizes=ANCHORS, score_threshold=0.0, detections_per_image=7)
    results = detector.eval()(torch.randn(3, 1, 16, 16, 16))
    assert len(results) == 3
    for result in results:
        assert result["boxes"].shape == (7, 6) and result["scores"].shape == (7,)
        assert result["labels"].dtype == torch.int64


def test_overfits_one_image_with_one_box(stand_in):
    network = stand_in(width=8)
    detector = RetinaUNetDetector(network, anchor_sizes=ANCHORS)
    image = torch.zeros(1, 1, 24, 24, 24)
    truth = torch.tensor([[6.0, 8.0, 4.0, 14.0, 16.0, 10.0]])
    image[0, 0, 6:14, 8:16, 4:10] = 1.0
    targets = _targets([truth.tolist()], shape=(24, 24, 24))
    optimiser = torch.optim.Adam(network.parameters(), lr=5e-3)
    detector.train()
    for _ in range(40):
        loss = detector(image, targets)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    best = detector.eval()(image)[0]
    assert len(best["boxes"]) >= 1
    assert box_iou(best["boxes"][:1], truth).item() > 0.5
