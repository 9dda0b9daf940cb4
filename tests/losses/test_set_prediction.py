import pytest
import torch

from shared.losses.classification import sigmoid_focal_loss
from shared.losses.set_prediction import SetPredictionLoss, set_loss_terms, target_count

TARGETS = [torch.tensor([[0.3, 0.4, 0.5, 0.2, 0.1, 0.2], [0.7, 0.6, 0.5, 0.1, 0.2, 0.1]]), torch.zeros(0, 6)]
LABELS = [torch.tensor([0, 1]), torch.zeros(0, dtype=torch.long)]


def _outputs(logits, boxes, layers=2, proposals=True):
    outputs = {"class_logits": [logits.clone().requires_grad_() for _ in range(layers)],
               "boxes": [boxes.clone().requires_grad_() for _ in range(layers)]}
    if proposals:
        outputs.update(proposal_logits=logits.clone().requires_grad_(), proposal_boxes=boxes.clone().requires_grad_())
    return outputs


def test_perfect_prediction_costs_nothing():
    logits = torch.full((2, 4, 2), -30.0)
    boxes = torch.full((2, 4, 6), 0.5)
    logits[0, 1, 0], logits[0, 3, 1] = 30.0, 30.0
    boxes[0, 1], boxes[0, 3] = TARGETS[0][0], TARGETS[0][1]
    losses = SetPredictionLoss()(_outputs(logits, boxes), TARGETS, LABELS)
    assert set(losses) == {f"{term}{suffix}" for term in ("classification", "box_l1", "box_giou")
                           for suffix in ("", "_0", "_proposals")} | {"loss"}
    for name, value in losses.items():
        assert float(value.detach()) == pytest.approx(0.0, abs=1e-3), name  # GIoU runs in float32


def test_patches_without_objects_are_valid():
    logits, boxes = torch.randn(2, 4, 2), torch.rand(2, 4, 6) * 0.5 + 0.25
    outputs = _outputs(logits, boxes)
    no_objects = [torch.zeros(0, 6), torch.zeros(0, 6)]
    no_labels = [torch.zeros(0, dtype=torch.long)] * 2
    losses = SetPredictionLoss()(outputs, no_objects, no_labels)
    assert float(losses["box_l1"]) == 0.0 and float(losses["box_giou"]) == 0.0
    # every query a negative, divided by one box (the floor)
    expected = sigmoid_focal_loss(logits, torch.zeros_like(logits)).sum()
    assert float(losses["classification"]) == pytest.approx(float(expected), rel=1e-5)
    losses["loss"].backward()
    assert outputs["class_logits"][-1].grad.abs().sum() > 0 and outputs["boxes"][-1].grad is not None


def test_terms_against_hand_computation():
    logits, boxes = torch.randn(1, 3, 2), torch.rand(1, 3, 6) * 0.4 + 0.3
    targets, labels = [TARGETS[0]], [LABELS[0]]
    matches = [(torch.tensor([0, 2]), torch.tensor([1, 0]))]
    terms = set_loss_terms(logits, boxes, matches, targets, labels, num_boxes=2.0)
    one_hot = torch.zeros(1, 3, 2)
    one_hot[0, 0, 1] = one_hot[0, 2, 0] = 1.0
    expected = sigmoid_focal_loss(logits, one_hot).sum() / 2
    assert float(terms["classification"]) == pytest.approx(float(expected), rel=1e-5)
    l1 = (boxes[0, 0] - targets[0][1]).abs().sum() + (boxes[0, 2] - targets[0][0]).abs().sum()
    assert float(terms["box_l1"]) == pytest.approx(float(l1 / 2), rel=1e-5)
    assert 0 < float(terms["box_giou"]) < 2


def test_weights_and_auxiliary_switches():
    logits, boxes = torch.randn(2, 4, 2), torch.rand(2, 4, 6) * 0.5 + 0.25
    loss = SetPredictionLoss(term_weights={"classification": 2.0}, auxiliary=False, proposals=False)
    losses = loss(_outputs(logits, boxes, layers=3), TARGETS, LABELS)
    assert set(losses) == {"classification", "box_l1", "box_giou", "loss"}
    expected = 2 * losses["classification"] + 5 * losses["box_l1"] + 2 * losses["box_giou"]
    assert float(losses["loss"]) == pytest.approx(float(expected), rel=1e-6)
    full = SetPredictionLoss()(_outputs(logits, boxes, layers=3), TARGETS, LABELS)
    assert {"classification_0", "classification_1", "classification_proposals"} <= set(full)
    with pytest.raises(ValueError, match="term_weights"):
        SetPredictionLoss(term_weights={"mask": 1.0})


def _target_count_worker(rank: int, folder: str) -> None:
    import torch.distributed as dist

    from shared.losses.set_prediction import target_count

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        labels = LABELS if rank == 0 else [LABELS[0], LABELS[0]]  # 2 targets on rank 0, 4 on rank 1
        torch.save(target_count(labels), f"{folder}/count_{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_under_torch_distributed_every_rank_divides_by_the_mean_target_count(tmp_path):
    assert target_count(LABELS) == 2.0 and target_count([torch.zeros(0, dtype=torch.long)]) == 1.0  # alone
    torch.multiprocessing.spawn(_target_count_worker, args=(str(tmp_path),), nprocs=2, join=True)
    assert [torch.load(tmp_path / f"count_{rank}.pt") for rank in (0, 1)] == [3.0, 3.0]  # (2 + 4) / 2 on both
