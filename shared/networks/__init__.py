"""Whole networks assembled from an encoder and a decoder: the ResEnc U-Net for MAE pre-training and the
Retina U-Net network for detection (whose anchors, losses and boxes live in :mod:`shared.detectors`)."""

from __future__ import annotations

from shared.networks.resenc_unet import ResEncUNet
from shared.networks.retina_unet import RetinaUNetNetwork

__all__ = ["ResEncUNet", "RetinaUNetNetwork"]
