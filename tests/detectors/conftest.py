"""A tiny stand-in for ``RetinaUNetNetwork`` with the same output contract, for detector tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class StandInNetwork(nn.Module):
    """Conv features, average-pooled to each detection stride, 1×1 heads; seg head at full resolution."""

    def __init__(self, in_channels=1, num_classes=1, *, strides=(4, 8), num_anchors=27, width=16, segmentation=True):
        super().__init__()
        self.detection_strides = tuple(strides)
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Conv3d(width, width, 3, padding=1), nn.ReLU()
        )
        self.level_convs = nn.ModuleList(nn.Conv3d(width, width, 3, padding=1) for _ in strides)
        self.cls_head = nn.Conv3d(width, num_anchors * num_classes, 1)
        self.box_head = nn.Conv3d(width, num_anchors * 6, 1)
        self.seg_head = nn.Conv3d(width, num_classes + 1, 1) if segmentation else None
        nn.init.constant_(self.cls_head.bias, -4.595)  # prior 0.01
        nn.init.normal_(self.box_head.weight, std=0.01)
        nn.init.zeros_(self.box_head.bias)

    def forward(self, images):
        features = self.features(images)
        levels = [torch.relu(conv(nn.functional.avg_pool3d(features, s))) for conv, s in zip(self.level_convs, self.detection_strides)]
        out = {"cls_logits": [self.cls_head(f) for f in levels], "box_regression": [self.box_head(f) for f in levels]}
        if self.seg_head is not None:
            out["seg_logits"] = self.seg_head(features)
        return out


@pytest.fixture
def stand_in():
    """Factory: ``stand_in(**kwargs)`` builds a seeded :class:`StandInNetwork`."""

    def build(**kwargs):
        torch.manual_seed(0)
        return StandInNetwork(**kwargs)

    return build
