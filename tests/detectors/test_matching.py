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


def _monai_matches(boxes, anchors, positions, num_anchors, center_in_gt):
    from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher as MonaiATSSMatcher

    return MonaiATSSMatcher(num_candidates=4, center_in_gt=center_in_gt)(boxes, anchors, positions, num_anchors)[1]


def _random_boxes(generator, count, extent, *, on_grid):
    """Boxes inside ``extent`` voxels; ``on_grid`` puts corners on whole voxels, so centres tie with anchors'."""
    low = torch.rand(count, 3, generator=generator) * (extent - 12)
    size = 1 + torch.rand(count, 3, generator=generator) * 10
    if on_grid:
        low, size = low.floor(), size.floor()
    return torch.cat([low, low + size], dim=1)


def test_matches_are_monais_bit_for_bit():
    # the same float32 operations on the same values: equal matches, ties and thresholds included,
    # for isolated and overlapping boxes, levels with fewer positions than candidates, and center_in_gt
    generator = torch.Generator().manual_seed(0)
    layouts = [(SIZES, [4, 8], [(8, 8, 8), (4, 4, 4)]), ([[3.0, 5.0, 7.5]] * 3, [2, 4, 8], [(12, 12, 12), (6, 6, 6), (3, 3, 3)])]
    compared = 0
    for sizes, strides, grids in layouts:
        anchor_generator = AnchorGenerator(sizes, strides)
        anchors = anchor_generator.all_anchors(grids)
        positions = [g[0] * g[1] * g[2] for g in grids]
        extent = grids[0][0] * strides[0]
        for trial in range(40):
            boxes = _random_boxes(generator, 1 + trial % 4, extent, on_grid=trial % 2 == 0)
            if trial % 5 == 0:  # a box repeated: both copies claim the same anchors
                boxes = torch.cat([boxes, boxes[:1]])
            for center_in_gt in (False, True):
                matcher = ATSSMatcher(center_in_gt=center_in_gt)
                ours = matcher(boxes, anchors, positions, anchor_generator.num_anchors)
                expected = _monai_matches(boxes, anchors, positions, anchor_generator.num_anchors, center_in_gt)
                assert torch.equal(ours, expected.to(torch.int64)), (trial, center_in_gt)
                compared += int((expected >= 0).sum())
    assert compared > 1000  # the comparison covered many positives, not just background


def test_candidate_iou_equals_monais_box_iou_at_the_candidates():
    from monai.data.box_utils import box_iou

    from shared.detectors.matching import candidate_iou

    anchors, _, _ = _anchors()
    generator = torch.Generator().manual_seed(1)
    boxes = _random_boxes(generator, 3, 32, on_grid=False)
    candidates = torch.randint(0, anchors.shape[0], (3, 50), generator=generator)
    assert torch.equal(candidate_iou(boxes, anchors[candidates]), box_iou(boxes, anchors).gather(1, candidates))


def test_anchor_centres_are_recomputed_when_the_anchors_change():
    anchors, _, _ = _anchors()
    matcher = ATSSMatcher()
    first = matcher.anchor_centres(anchors)
    assert matcher.anchor_centres(anchors) is first
    anchors[:, :3] -= 1.0  # in place: the cached centres are stale
    assert torch.equal(matcher.anchor_centres(anchors), first - 0.5)
