"""Whole networks assembled from an encoder and a decoder (e.g. the ResEnc U-Net for MAE pre-training)."""

from __future__ import annotations

from shared.networks.resenc_unet import ResEncUNet

__all__ = ["ResEncUNet"]
