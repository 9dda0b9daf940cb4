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


def _losses_as_before_the_speed_ups(detector, outputs, targets):
    """The loss terms computed as the detector did before issue 19's speed-ups: MONAI's ATSS matcher over
    freshly concatenated anchors, every anchor's deltas flattened, the focal loss on masked logits."""
    from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher as MonaiATSSMatcher

    from shared.detectors.anchors import flatten_head_outputs
    from shared.losses.classification import one_hot_targets, sigmoid_focal_loss

    logits = flatten_head_outputs(outputs["cls_logits"], detector.num_classes)
    deltas = flatten_head_outputs(outputs["box_regression"], 6)
    grids = [tuple(level.shape[2:]) for level in outputs["cls_logits"]]
    anchors = torch.cat(detector.anchor_generator.anchors_per_level(grids))
    positions = [g[0] * g[1] * g[2] for g in grids]
    matcher = MonaiATSSMatcher(num_candidates=4, center_in_gt=False)
    classes, predicted, encoded = [], [], []
    for image, (boxes, labels) in enumerate(zip(targets["boxes"], targets["labels"])):
        matches = (matcher(boxes, anchors, positions, 27)[1] if len(boxes)
                   else torch.full((len(anchors),), -1, dtype=torch.int64))
        positive = matches >= 0
        classes.append(torch.where(positive, labels[matches.clamp(min=0)], matches) if len(labels) else matches)
        predicted.append(deltas[image][positive])
        encoded.append(detector.box_coder.encode(boxes[matches[positive]], anchors[positive]))
    classes = torch.stack(classes)
    valid = classes >= -1
    focal = sigmoid_focal_loss(logits[valid], one_hot_targets(classes, detector.num_classes, logits.dtype)[valid])
    return {"classification": focal.sum() / (classes >= 0).sum().clamp(min=1),
            "box_l1": torch.nn.functional.l1_loss(torch.cat(predicted), torch.cat(encoded), reduction="sum")
            / max(len(torch.cat(predicted)), 1)}


def test_losses_and_gradients_are_those_before_the_speed_ups(stand_in):
    torch.manual_seed(0)
    network = stand_in(num_classes=2, segmentation=False)
    detector = RetinaUNetDetector(network, anchor_sizes=ANCHORS).train()
    images = torch.randn(3, 1, 16, 16, 16)
    targets = _targets([[[2, 3, 4, 8, 9, 9], [9.5, 1, 2, 15, 7.5, 6]], [], [[0, 0, 0, 5, 5, 5]]])
    targets["labels"][0] = torch.tensor([1, 0])
    for _ in range(2):  # the second step reuses the cached anchors and their centres
        outputs = network(images)
        losses = detector.compute_losses(outputs, targets, images.shape[2:])
        expected = _losses_as_before_the_speed_ups(detector, outputs, targets)
        for name in expected:
            torch.testing.assert_close(losses[name], expected[name], rtol=1e-6, atol=0)
        grads = torch.autograd.grad(losses["loss"], list(network.parameters()), retain_graph=True)
        expected_grads = torch.autograd.grad(sum(expected.values()), list(network.parameters()))
        for ours, reference in zip(grads, expected_grads):
            torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-9)
