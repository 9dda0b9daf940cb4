from __future__ import annotations

import pytest
import torch

from shared.detectors.anchors import flatten_head_outputs
from shared.detectors.export import (DenseOutputNetwork, FlatOutputNetwork, exported_detections, split_dense_output,
                                     trace_detector, unflatten_outputs)
from shared.detectors.retina_unet import RetinaUNetDetector
from shared.networks.retina_unet import RetinaUNetNetwork


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


def _tiny_network(**kwargs) -> RetinaUNetNetwork:
    torch.manual_seed(0)
    arguments = dict(encoder={"name": "resenc", "preset": "tiny"}, decoder_channels=16, detection_strides=(4, 8))
    return RetinaUNetNetwork(1, 2, num_anchors=3, **{**arguments, **kwargs}).eval()


def test_dense_output_is_the_flattened_heads_and_splits_back():
    network = _tiny_network()
    dense_network = _tiny_network(dense_output=True)
    images = torch.randn(2, 1, 32, 16, 24)
    reference = network(images)
    dense = dense_network(images)
    # shape from the parameters: K + 6 channels, anchors of both levels at strides 4 and 8
    assert dense.shape == (2, 2 + 6, (8 * 4 * 6 + 4 * 2 * 3) * 3)
    torch.testing.assert_close(dense[:, :2].transpose(1, 2), flatten_head_outputs(reference["cls_logits"], 2))
    torch.testing.assert_close(dense[:, 2:].transpose(1, 2), flatten_head_outputs(reference["box_regression"], 6))
    split = split_dense_output(dense, (32, 16, 24), (4, 8), num_anchors=3, num_classes=2)
    for key in ("cls_logits", "box_regression"):
        assert len(split[key]) == 2
        for level, expected in zip(split[key], reference[key]):
            assert torch.equal(level, expected)


def test_traced_dense_network_gives_the_detectors_boxes():
    network = _tiny_network()
    images = torch.randn(1, 1, 32, 32, 32)
    traced = torch.jit.trace(_tiny_network(dense_output=True), images)
    detector = RetinaUNetDetector(network, anchor_sizes=[[4.0], [6.0], [4.0, 6.0, 8.0]], score_threshold=0.0).eval()
    outputs = split_dense_output(traced(images), (32, 32, 32), network.detection_strides, 3, 2)
    from_export = detector.postprocessor(outputs["cls_logits"], outputs["box_regression"], (32, 32, 32))
    direct = detector(images)
    assert len(direct[0]["boxes"]) > 0
    for exported, eager in zip(from_export, direct):
        torch.testing.assert_close(exported["boxes"], eager["boxes"])
        torch.testing.assert_close(exported["scores"], eager["scores"])
        assert torch.equal(exported["labels"], eager["labels"])


def test_split_dense_output_checks_the_shape():
    with pytest.raises(ValueError, match=r"expected \(B, 8, 216\)"):
        split_dense_output(torch.zeros(1, 8, 215), (16, 16, 16), (4, 8), num_anchors=3, num_classes=2)


def test_dense_output_splits_back_on_anisotropic_levels():
    encoder = {"name": "plain", "features": [4, 8, 8, 8], "strides": [1, [2, 2, 1], 2, 2], "convs_per_stage": 1}
    torch.manual_seed(0)
    network = _tiny_network(encoder=encoder)
    dense_network = _tiny_network(encoder=encoder, dense_output=True)
    dense_network.load_state_dict(network.state_dict())
    images = torch.randn(1, 1, 16, 16, 8)
    reference = network(images)
    split = split_dense_output(dense_network(images), (16, 16, 8), network.detection_strides, 3, 2)
    assert [tuple(level.shape[2:]) for level in split["cls_logits"]] == [(4, 4, 4), (2, 2, 2)]
    for key in ("cls_logits", "box_regression"):
        for level, expected in zip(split[key], reference[key], strict=True):
            torch.testing.assert_close(level, expected)


def test_dense_output_network_is_the_dense_output_of_the_network():
    network = _tiny_network()
    dense_network = _tiny_network(dense_output=True)
    images = torch.randn(2, 1, 32, 16, 24)
    (dense,) = DenseOutputNetwork(network)(images)
    assert torch.equal(dense, dense_network(images))


def test_traced_detector_export_gives_predict_through_the_interface():
    # the generic path (trace export_network, decode with detections_from_outputs) for Retina U-Net
    detector = RetinaUNetDetector(_tiny_network(), anchor_sizes=[[4.0], [6.0], [4.0, 6.0, 8.0]],
                                  score_threshold=0.0).eval()
    traced = trace_detector(detector, torch.zeros(1, 1, 32, 32, 32))
    torch.manual_seed(1)
    images = torch.randn(2, 1, 32, 32, 48)  # a size the trace did not see
    exported, direct = exported_detections(detector, traced, images), detector.predict(images)
    assert len(direct[0]["boxes"]) > 0
    for from_export, eager in zip(exported, direct, strict=True):
        torch.testing.assert_close(from_export["boxes"], eager["boxes"])
        torch.testing.assert_close(from_export["scores"], eager["scores"])
        assert torch.equal(from_export["labels"], eager["labels"])
    assert detector.training is False and detector.network.training is False


def test_retina_unet_output_spec_is_the_metadata_of_the_dense_output():
    detector = RetinaUNetDetector(_tiny_network(), anchor_sizes=[[4.0], [6.0], [4.0, 6.0, 8.0]])
    formatted = detector.output_spec.network_data_format()
    assert list(formatted) == ["pred"]
    assert formatted["pred"]["num_channels"] == 2 + 6
    assert formatted["pred"]["channel_def"] == {"0-1": "class logits per anchor", "2-7": "box deltas per anchor"}
    (dense,) = detector.export_network()(torch.randn(1, 1, 32, 32, 32))
    detector.output_spec.check((dense,))
    with pytest.raises(ValueError, match="declares 8 channels"):
        detector.output_spec.check((dense[:, :7],))


def test_scripting_is_not_the_export_path():
    # documents why the traced export is the documented one: the compiler rejects the modules
    with pytest.raises(Exception):
        torch.jit.script(_tiny_network(dense_output=True))


@pytest.mark.parametrize("bundle", ["retina_unet_detection", "resenc_retina_unet_detection"])
def test_bundle_metadata_declares_the_detectors_export_output(bundle):
    import json
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "bundles" / bundle / "configs"
    metadata = json.loads((configs / "metadata.json").read_text())["network_data_format"]["outputs"]
    num_classes = json.loads((configs / "train.json").read_text())["num_classes"]
    network = RetinaUNetNetwork(1, num_classes, encoder={"name": "resenc", "preset": "tiny"}, decoder_channels=16,
                                detection_strides=(4, 8), num_anchors=3)
    declared = RetinaUNetDetector(network, anchor_sizes=[[4.0], [6.0], [4.0, 6.0, 8.0]]).output_spec
    assert list(metadata) == [output.name for output in declared.outputs]
    for output in declared.outputs:
        assert metadata[output.name]["num_channels"] == output.num_channels
