"""The training-step benchmark's own parts: MONAI's feature extractor rebuilt without torchvision, MONAI's
detector training through it, and the table."""

from __future__ import annotations

import pytest
import torch

from tools.benchmarks.bench_training_step import PHASES, PhaseClock, _ResNetFeatures, format_table, monai_detector


def test_the_monai_feature_extractor_gives_fpn_levels_at_strides_4_8_16():
    from monai.networks.nets import resnet

    backbone = resnet.ResNet(block=resnet.ResNetBottleneck, layers=[1, 1, 1, 1], block_inplanes=[8, 16, 32, 64],
                             n_input_channels=1, conv1_t_stride=2, conv1_t_size=3)
    features = _ResNetFeatures(backbone, [1, 2])
    assert list(features.body) == ["conv1", "bn1", "act", "maxpool", "layer1", "layer2"]  # nothing past layer 2
    maps = list(features(torch.randn(1, 1, 32, 32, 32)).values())
    assert [tuple(m.shape[2:]) for m in maps] == [(8, 8, 8), (4, 4, 4), (2, 2, 2)]
    assert all(m.shape[1] == features.out_channels == 256 for m in maps)


def test_monais_detector_trains_one_step_with_its_atss_matcher():
    detector, optimizer = monai_detector(2, torch.device("cpu"))
    targets = [{"boxes": torch.tensor([[10.0, 12, 14, 20, 22, 21]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 6), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = detector.train()(torch.randn(2, 1, 32, 32, 32), targets)
    loss = losses[detector.cls_key] + losses[detector.box_reg_key]
    assert torch.isfinite(loss) and losses[detector.box_reg_key] > 0  # a positive anchor was matched
    loss.backward()
    optimizer.step()


def test_the_table_gives_milliseconds_per_step_and_the_ratio_to_monai():
    rows = {"ours": {**dict.fromkeys(PHASES, 1.0), "matching": 0.5},
            "MONAI RetinaNetDetector": {**dict.fromkeys(PHASES, 2.0), "matching": 0.0}}
    table = format_table(rows, steps=10).splitlines()
    assert table[2] == "| ours | 100 | 100 | 100 | 100 | 100 | 50 | 500 | 0.50 |"
    assert table[3].endswith("| 1000 | 1.00 |")


def test_the_clock_adds_only_while_recording():
    clock = PhaseClock(torch.device("cpu"), "cpu")
    clock.add("data", 1.0)
    clock.recording = False
    clock.add("data", 5.0)
    assert clock.totals == {"data": 1.0}
    with pytest.raises(ValueError, match="clock"):
        PhaseClock(torch.device("cpu"), "gpu")
