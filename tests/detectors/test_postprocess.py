from __future__ import annotations

import torch

from shared.detectors.anchors import AnchorGenerator
from shared.detectors.box_coder import BoxCoder
from shared.detectors.postprocess import DetectionPostprocessor

SIZES = [[4.0], [4.0], [4.0]]  # one anchor per position keeps the golden cases readable


def _outputs(num_classes, grid=(4, 4, 4)):
    cls = torch.full((1, num_classes, *grid), -10.0)
    reg = torch.zeros(1, 6, *grid)
    return cls, reg


def _postprocessor(**kwargs):
    return DetectionPostprocessor(AnchorGenerator(SIZES, [4]), BoxCoder(), **kwargs)


def test_one_confident_anchor_gives_its_anchor_box():
    cls, reg = _outputs(2)
    cls[0, 1, 1, 2, 3] = 3.0  # class 1 at cell (1, 2, 3)
    result = _postprocessor()([cls], [reg], (16, 16, 16))
    assert len(result) == 1
    torch.testing.assert_close(result[0]["boxes"], torch.tensor([[4.0, 8, 12, 8, 12, 16]]))
    torch.testing.assert_close(result[0]["scores"], torch.sigmoid(torch.tensor([3.0])))
    assert result[0]["labels"].tolist() == [1]


def test_regression_moves_the_box():
    cls, reg = _outputs(1)
    cls[0, 0, 0, 0, 0] = 5.0
    reg[0, 0, 0, 0, 0] = 0.5  # dx of half an anchor
    result = _postprocessor()([cls], [reg], (16, 16, 16))[0]
    torch.testing.assert_close(result["boxes"], torch.tensor([[2.0, 0, 0, 6, 4, 4]]))  # clipped at 0 in y, z


def test_nms_is_class_wise_and_threshold_applies():
    cls, reg = _outputs(2)
    cls[0, 0, 1, 1, 1] = 4.0
    reg[0, 3:, 1, 1, 1] = 0.7  # a larger box around the same cell, still the same object
    cls[0, 0, 2, 1, 1] = 3.0   # class 0 neighbour overlapping the big box → suppressed
    reg[0, 0, 2, 1, 1] = -0.5
    reg[0, 3:, 2, 1, 1] = 0.7
    cls[0, 1, 2, 1, 1] = 2.0   # same place, other class → kept
    cls[0, 1, 3, 3, 3] = -4.0  # below the threshold → dropped
    result = _postprocessor(nms_iou=0.5)([cls], [reg], (16, 16, 16))[0]
    assert result["labels"].tolist() == [0, 1]
    assert result["scores"][0] > result["scores"][1]
    # the suppressed box overlaps with IoU ≈ 0.6: a looser NMS keeps it
    loose = _postprocessor(nms_iou=0.9)([cls], [reg], (16, 16, 16))[0]
    assert loose["labels"].tolist() == [0, 0, 1]


def test_topk_and_detections_per_image_limit_the_output():
    cls, reg = _outputs(1, grid=(4, 4, 4))
    cls[:] = torch.linspace(0, 5, 64).reshape(1, 1, 4, 4, 4)
    limited = _postprocessor(detections_per_image=5)([cls], [reg], (16, 16, 16))[0]
    assert len(limited["boxes"]) == 5
    torch.testing.assert_close(limited["scores"][0], torch.sigmoid(torch.tensor(5.0)))
    top3 = _postprocessor(topk_candidates=3)([cls], [reg], (16, 16, 16))[0]
    assert len(top3["boxes"]) == 3


def test_empty_output_has_the_right_shapes():
    cls, reg = _outputs(1)
    two_levels = DetectionPostprocessor(AnchorGenerator(SIZES, [4, 8]), BoxCoder())
    result = two_levels([cls, cls[..., :2, :2, :2]], [reg, reg[..., :2, :2, :2]], (16, 16, 16))[0]
    assert result["boxes"].shape == (0, 6) and result["scores"].shape == (0,) and result["labels"].shape == (0,)
