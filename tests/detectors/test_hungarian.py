import itertools

import pytest
import torch
from monai.data.box_utils import box_giou

from shared.boxes.normalized import centre_size_to_corners
from shared.detectors.hungarian import HungarianMatcher, focal_class_cost


def _random_boxes(generator, count):
    centres = torch.rand(count, 3, generator=generator, dtype=torch.float64) * 0.6 + 0.2
    sizes = torch.rand(count, 3, generator=generator, dtype=torch.float64) * 0.3 + 0.05
    return torch.cat([centres, sizes], dim=1)


def _brute_force(cost):
    """The least total cost over every injective assignment of targets (columns) to queries (rows)."""
    queries, targets = cost.shape
    return min(sum(cost[q, t] for t, q in enumerate(rows)) for rows in itertools.permutations(range(queries), targets))


@pytest.mark.parametrize("queries, targets, seed", [(3, 1, 0), (4, 3, 1), (5, 5, 2), (6, 2, 3), (6, 4, 4)])
def test_assignment_is_the_brute_force_optimum(queries, targets, seed):
    generator = torch.Generator().manual_seed(seed)
    matcher = HungarianMatcher()
    logits = torch.randn(1, queries, 3, generator=generator, dtype=torch.float64)
    boxes = _random_boxes(generator, queries)[None]
    target_boxes = [_random_boxes(generator, targets)]
    labels = [torch.randint(0, 3, (targets,), generator=generator)]
    (query_index, target_index), = matcher(logits, boxes, target_boxes, labels)
    cost = matcher.cost_matrix(logits[0], boxes[0], target_boxes[0], labels[0]).double()
    assert len(query_index) == targets and sorted(target_index.tolist()) == list(range(targets))
    assert len(set(query_index.tolist())) == targets
    assert float(cost[query_index, target_index].sum()) == pytest.approx(float(_brute_force(cost)), abs=1e-9)


def test_cost_matrix_is_the_weighted_sum_of_its_terms():
    generator = torch.Generator().manual_seed(5)
    logits, boxes = torch.randn(4, 2, generator=generator), _random_boxes(generator, 4).float()
    targets, labels = _random_boxes(generator, 3).float(), torch.tensor([1, 0, 1])
    matcher = HungarianMatcher(class_weight=2, l1_weight=5, giou_weight=2)
    probability = logits.sigmoid()[:, labels]
    focal = 0.25 * (1 - probability) ** 2 * -probability.log() - 0.75 * probability**2 * -(1 - probability).log()
    l1 = (boxes[:, None] - targets[None]).abs().sum(-1)
    giou = box_giou(centre_size_to_corners(boxes), centre_size_to_corners(targets))
    expected = 2 * focal + 5 * l1 - 2 * giou
    torch.testing.assert_close(matcher.cost_matrix(logits, boxes, targets, labels), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(focal_class_cost(logits, labels), focal, atol=1e-6, rtol=1e-5)


def test_matches_the_query_that_equals_the_target():
    target = torch.tensor([[0.5, 0.4, 0.6, 0.2, 0.1, 0.3]])
    boxes = torch.tensor([[0.2, 0.2, 0.2, 0.1, 0.1, 0.1], [0.5, 0.4, 0.6, 0.2, 0.1, 0.3],
                          [0.8, 0.8, 0.8, 0.2, 0.2, 0.2]])
    (queries, targets), = HungarianMatcher()(torch.zeros(1, 3, 1), boxes[None], [target], [torch.tensor([0])])
    assert queries.tolist() == [1] and targets.tolist() == [0]


def test_images_without_targets_match_nothing():
    matches = HungarianMatcher()(torch.zeros(2, 3, 1), torch.full((2, 3, 6), 0.5),
                                 [torch.zeros(0, 6), torch.tensor([[0.5] * 6])], [torch.zeros(0, dtype=torch.long),
                                                                                  torch.tensor([0])])
    assert [len(queries) for queries, _ in matches] == [0, 1]


def test_refuses_negative_weights():
    with pytest.raises(ValueError, match="weights"):
        HungarianMatcher(l1_weight=-1)
