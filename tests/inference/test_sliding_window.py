from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.data.box_utils import box_iou
from torch import nn

from shared.boxes.convention import boxes_from_instance_mask
from shared.detectors.retina_unet import RetinaUNetDetector
from shared.inference.sliding_window import (ALL_FLIPS, consolidate_streams, predict_streams, predict_volume,
                                             split_settings, tile_origins, unflip_boxes)

STRIDE = 8


class CellDetector(nn.Module):
    """Parameter-light stand-in: class logit high where an 8³ cell is mostly foreground, zero deltas.

    Average pooling on an aligned grid commutes with flips, so its predictions are mirror-symmetric.
    """

    detection_strides = (STRIDE,)
    num_anchors = 1
    num_classes = 1

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(20.0))

    def forward(self, images):
        pooled = F.avg_pool3d(images[:, :1], STRIDE)
        cls = self.gain * (pooled - 0.5)
        return {"cls_logits": [cls], "box_regression": [torch.zeros_like(cls).repeat(1, 6, 1, 1, 1)]}


def _detector():
    """The cell network behind Retina U-Net's post-processing: one 8³ anchor per cell, score threshold 0.05."""
    return RetinaUNetDetector(CellDetector(), anchor_sizes=[[8.0]] * 3, segmentation_loss=None, score_threshold=0.05)


def _volume(shape, box):
    volume = torch.zeros(1, *shape)
    volume[0, box[0] : box[3], box[1] : box[4], box[2] : box[5]] = 1.0
    return volume


def test_tile_origins():
    assert tile_origins((64, 32, 40), (32, 32, 32)).tolist()[:3] == [[0, 0, 0], [0, 0, 8], [16, 0, 0]]
    assert len(tile_origins((64, 32, 40), (32, 32, 32))) == 3 * 1 * 2
    assert tile_origins((48, 48, 48), (32, 32, 32), overlap=0.0)[:, 0].unique().tolist() == [0, 16]
    with pytest.raises(ValueError, match="smaller than the patch"):
        tile_origins((16, 32, 32), (32, 32, 32))


@pytest.mark.parametrize("flip", ALL_FLIPS)
def test_unflip_boxes_is_exact_against_a_flipped_mask(flip):
    mask = torch.zeros(12, 10, 8, dtype=torch.long)
    mask[2:5, 3:9, 0:2] = 1
    flipped = torch.flip(mask, list(flip)) if flip else mask
    flipped_box, _ = boxes_from_instance_mask(flipped.numpy())
    original_box, _ = boxes_from_instance_mask(mask.numpy())
    restored = unflip_boxes(torch.as_tensor(flipped_box), flip, (12, 10, 8))
    torch.testing.assert_close(restored, torch.as_tensor(original_box))


def test_object_seen_by_all_tiles_gives_one_box():
    truth = [16, 16, 16, 24, 24, 24]
    timings = {}
    result = predict_volume(
        [_detector()], _volume((48, 48, 48), truth), patch_size=(32, 32, 32),
        batch_size=3, timings=timings,
    )
    assert timings["streams"] == 8  # 2 × 2 × 2 tiles, every one of them sees the object
    assert len(result["boxes"]) == 1
    torch.testing.assert_close(result["boxes"], torch.tensor([truth], dtype=torch.float32))
    torch.testing.assert_close(result["scores"], torch.sigmoid(torch.tensor([10.0])))
    assert set(timings) >= {"forward", "postprocess", "consolidation", "total"}


def test_mirroring_gives_the_same_boxes_for_a_symmetric_network():
    volume = _volume((48, 40, 32), [8, 16, 0, 16, 24, 8]) + _volume((48, 40, 32), [32, 8, 16, 40, 16, 24])
    kwargs = {"patch_size": (32, 32, 32)}
    plain = predict_volume([_detector()], volume, **kwargs)
    mirrored = predict_volume([_detector()], volume, mirror=True, **kwargs)
    assert len(plain["boxes"]) == 2
    torch.testing.assert_close(mirrored["boxes"], plain["boxes"])
    torch.testing.assert_close(mirrored["scores"], plain["scores"])


def test_object_near_tile_borders_in_a_fold_ensemble_of_detectors():
    # the object lies in only one of the two tiles along x, and the ensemble doubles every stream
    truth = [0, 8, 8, 8, 16, 16]
    detectors = [RetinaUNetDetector(CellDetector(), anchor_sizes=[[8.0]] * 3, segmentation_loss=None) for _ in range(2)]
    result = predict_volume(detectors, _volume((48, 32, 32), truth), patch_size=(32, 32, 32))
    assert len(result["boxes"]) == 1
    assert box_iou(result["boxes"], torch.tensor([truth], dtype=torch.float32)).item() > 0.99
    # every stream that could see it did: no missing-prediction penalty
    torch.testing.assert_close(result["scores"], torch.sigmoid(torch.tensor([10.0])))


def test_volume_smaller_than_the_patch_is_padded_and_boxes_are_clipped():
    truth = [8, 8, 0, 16, 16, 8]
    result = predict_volume(
        [_detector()], _volume((24, 20, 8), truth), patch_size=(32, 32, 16)
    )
    assert len(result["boxes"]) == 1
    torch.testing.assert_close(result["boxes"], torch.tensor([truth], dtype=torch.float32))
    empty = predict_volume(
        [_detector()], torch.zeros(1, 24, 20, 8), patch_size=(32, 32, 16)
    )
    assert empty["boxes"].shape == (0, 6)


def test_a_bare_network_is_refused_naming_the_interface():
    with pytest.raises(TypeError, match=r"predict\(images\).*CellDetector"):
        predict_volume([CellDetector()], torch.zeros(1, 32, 32, 32), patch_size=(32, 32, 32))


def test_streams_then_consolidation_equals_predict_volume():
    # two objects, one at a tile border, mirrored: the split API must reproduce predict_volume exactly
    volume = _volume((48, 32, 32), [0, 8, 8, 8, 16, 16]) + _volume((48, 32, 32), [24, 16, 16, 40, 24, 24])
    settings = {"patch_size": (32, 32, 32), "mirror": True}
    streams = predict_streams(_detector(), volume, **settings)
    assert streams.boxes.shape[0] == streams.scores.shape[0] == streams.expected.shape[0] > 2
    assert streams.shape == (48, 32, 32)
    for cluster_iou, threshold in [(0.5, 0.05), (0.2, 0.9)]:
        split = consolidate_streams(streams, cluster_iou=cluster_iou, score_threshold=threshold)
        whole = predict_volume(_detector(), volume, cluster_iou=cluster_iou, score_threshold=threshold, **settings)
        assert len(whole["boxes"]) >= (2 if threshold < 0.5 else 0)
        for key in whole:
            torch.testing.assert_close(split[key], whole[key])


def test_settings_split_into_network_pass_and_clustering():
    # a bundle's "inference" dict: one set of keywords, each routed to the half that owns its default
    streams, clustering = split_settings({"overlap": 0.25, "mirror": True, "batch_size": 2, "sigma_scale": 0.5,
                                          "cluster_iou": 0.4, "score_threshold": 0.1, "min_size": 2.0,
                                          "detections_per_volume": 7})
    assert streams == {"overlap": 0.25, "mirror": True, "batch_size": 2, "sigma_scale": 0.5}
    assert clustering == {"cluster_iou": 0.4, "score_threshold": 0.1, "min_size": 2.0, "detections_per_volume": 7}


def test_an_unknown_setting_is_named():
    with pytest.raises(ValueError, match="'cluster_iuo'.*cluster_iou"):
        predict_volume([_detector()], torch.zeros(1, 32, 32, 32), patch_size=(32, 32, 32),
                       cluster_iuo=0.5)


def test_the_final_filters_change_the_output_and_may_not_undercut_the_per_tile_ones():
    # two objects of scores sigmoid(10) and sigmoid(0.4 · 20 - 10) ≈ 0.12: the final threshold decides
    volume = _volume((48, 32, 32), [0, 8, 8, 8, 16, 16]) + 0.4 * _volume((48, 32, 32), [24, 16, 16, 32, 24, 24])
    settings = {"patch_size": (32, 32, 32)}
    assert len(predict_volume(_detector(), volume, score_threshold=0.05, **settings)["boxes"]) == 2
    assert len(predict_volume(_detector(), volume, score_threshold=0.5, **settings)["boxes"]) == 1
    assert len(predict_volume(_detector(), volume, score_threshold=0.05, detections_per_volume=1,
                              **settings)["boxes"]) == 1
    # below the per-tile filters nothing would change: refused, naming both
    with pytest.raises(ValueError, match=r"score_threshold 0.01 .* per-tile .* 0.05"):
        predict_volume(_detector(), volume, score_threshold=0.01, **settings)
    with pytest.raises(ValueError, match=r"min_size 0.001 .* per-tile .* 0.01"):
        predict_volume(_detector(), volume, min_size=0.001, **settings)


#: predict_volume of the fixed network and volume below, computed by the code before the detector
#: interface (sliding window taking the network and post-processor out of the detector): the interface
#: must not change Retina U-Net's inference. Equal up to float rounding only: another CPU's vectorised
#: kernels round differently (an AMD EPYC gave boxes 4e-6 voxels and scores 3e-8 off these)
BEFORE_BOXES = [
    [31.9963321685791, 18.968164443969727, 2.5916318893432617,
      35.74085998535156, 25.681949615478516, 8.752827644348145],
    [16.30152130126953, 0.0, 19.555557250976562,
      20.075109481811523, 4.635964870452881, 25.208755493164062],
    [0.16439028084278107, 10.913923263549805, 15.818486213684082,
      3.699716091156006, 17.156883239746094, 20.23264503479004],
    [16.14958953857422, 7.072292327880859, 2.558527708053589,
      20.106491088867188, 13.4327392578125, 8.620787620544434],
    [16.105558395385742, 18.90900230407715, 0.0,
      20.00640869140625, 24.89552116394043, 4.288517951965332],
    [20.185882568359375, 10.370037078857422, 2.512056589126587,
      24.014463424682617, 17.54364776611328, 8.35910415649414],
]
BEFORE_SCORES = [0.268046110868454, 0.22248823940753937, 0.2198900282382965, 0.21221445500850677,
                 0.19977979362010956, 0.18972404301166534]
BEFORE_LABELS = [0, 0, 0, 0, 1, 0]


def test_retina_unet_predictions_are_those_of_before_the_interface():
    from shared.networks.retina_unet import RetinaUNetNetwork

    torch.manual_seed(0)
    network = RetinaUNetNetwork(1, 2, encoder={"name": "resenc", "preset": "tiny"}, decoder_channels=16,
                                detection_strides=(4, 8), num_anchors=3).eval()
    with torch.no_grad():  # scores near 0.5 instead of the prior, so that boxes come out
        for name, parameter in network.named_parameters():
            if "classification_head" in name and name.endswith("bias"):
                parameter.zero_()
    detector = RetinaUNetDetector(network, anchor_sizes=[[4.0], [6.0], [4.0, 6.0, 8.0]], score_threshold=0.05)
    volume = torch.randn(1, 40, 36, 28, generator=torch.Generator().manual_seed(1))
    found = predict_volume(detector, volume, patch_size=(32, 32, 16), mirror=True, score_threshold=0.05,
                           detections_per_volume=6, batch_size=3)
    torch.testing.assert_close(found["boxes"], torch.tensor(BEFORE_BOXES), rtol=0, atol=1e-4)
    torch.testing.assert_close(found["scores"], torch.tensor(BEFORE_SCORES), rtol=0, atol=1e-6)
    assert found["labels"].tolist() == BEFORE_LABELS
