from __future__ import annotations

import torch

from shared.detectors.anchors import AnchorGenerator
from shared.detectors.matching import BACKGROUND, ATSSMatcher

SIZES = [[4.0, 6.0, 8.0]] * 3
GRIDS = [(8, 8, 8), (4, 4, 4)]


def _anchors():
    generator = AnchorGenerator(SIZES, [4, 8])
    levels = generator.anchors_per_level(GRIDS)
    return torch.cat(levels), [g[0] * g[1] * g[2] for g in GRIDS], generator.num_anchors


def test_box_exactly_on_an_anchor_is_matched_to_it():
    anchors, positions, num_anchors = _anchors()
    index = ((3 * 8 + 4) * 8 + 2) * 27 + 13  # level 0, cell (3, 4, 2), anchor 13 (6 × 6 × 6)
    boxes = anchors[index : index + 1].clone()
    matches = ATSSMatcher()(boxes, anchors, positions, num_anchors)
    assert matches.shape == (anchors.shape[0],) and matches.dtype == torch.int64
    assert matches[index] == 0
    # positives are few and all overlap the box
    positive = torch.nonzero(matches == 0).flatten()
    assert 1 <= len(positive) <= 4 * 27 * 2
    overlap_low = torch.maximum(anchors[positive, :3], boxes[:, :3])
    overlap_high = torch.minimum(anchors[positive, 3:], boxes[:, 3:])
    assert (overlap_high > overlap_low).all()


def test_image_without_boxes_has_only_negatives():
    anchors, positions, num_anchors = _anchors()
    matches = ATSSMatcher()(torch.zeros((0, 6)), anchors, positions, num_anchors)
    assert (matches == BACKGROUND).all() and matches.shape == (anchors.shape[0],)


def test_two_distant_boxes_each_get_their_own_positives():
    anchors, positions, num_anchors = _anchors()
    boxes = torch.tensor([[2.0, 2, 2, 8, 8, 8], [20.0, 20, 20, 30, 30, 28]])
    matches = ATSSMatcher()(boxes, anchors, positions, num_anchors)
    for box_index, box in enumerate(boxes):
        chosen = anchors[matches == box_index]
        assert len(chosen) >= 1
        centres = (chosen[:, :3] + chosen[:, 3:]) / 2
        assert ((centres >= box[:3] - 4) & (centres <= box[3:] + 4)).all()


def test_center_in_gt_only_keeps_anchors_centred_inside_the_box():
    anchors, positions, num_anchors = _anchors()
    boxes = torch.tensor([[5.0, 5, 5, 15, 13, 11]])
    matches = ATSSMatcher(center_in_gt=True)(boxes, anchors, positions, num_anchors)
    centres = (anchors[matches == 0, :3] + anchors[matches == 0, 3:]) / 2
    assert len(centres) >= 1
    assert ((centres >= boxes[0, :3]) & (centres <= boxes[0, 3:])).all()
