from __future__ import annotations

import pytest
import torch

from shared.detectors.export import FlatOutputNetwork, unflatten_outputs
from shared.detectors.retina_unet import RetinaUNetDetector


def test_the_contract_dict_does_not_trace_as_is(stand_in):
    # documents why the wrapper exists: mixed list/tensor dict values are rejected by the tracer
    with pytest.raises(RuntimeError):
        torch.jit.trace(stand_in().eval(), torch.randn(1, 1, 16, 16, 16), strict=False)


@pytest.mark.parametrize("segmentation", [True, False])
def test_traced_flat_network_reproduces_outputs_and_detections(stand_in, segmentation):
    network = stand_in(segmentation=segmentation).eval()
    images = torch.randn(2, 1, 16, 16, 16)
    traced = torch.jit.trace(FlatOutputNetwork(network), images)
    outputs = unflatten_outputs(traced(images), num_levels=2)
    reference = network(images)
    assert set(outputs) == set(reference)
    for key in ("cls_logits", "box_regression"):
        for level, expected in zip(outputs[key], reference[key]):
            torch.testing.assert_close(level, expected)
    detector = RetinaUNetDetector(network, anchor_sizes=[[4.0, 6.0, 8.0]] * 3, score_threshold=0.0).eval()
    from_export = detector.postprocessor(outputs["cls_logits"], outputs["box_regression"], (16, 16, 16))
    for exported, direct in zip(from_export, detector(images)):
        torch.testing.assert_close(exported["boxes"], direct["boxes"])
        torch.testing.assert_close(exported["scores"], direct["scores"])


def test_unflatten_checks_the_count():
    with pytest.raises(ValueError, match="expected 4 or 5"):
        unflatten_outputs([torch.zeros(1)] * 3, num_levels=2)
