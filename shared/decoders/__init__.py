"""Decoders: sized from an encoder's ``feature_info``; they never hold the encoder itself."""

from __future__ import annotations

from shared.decoders.ufpn import UFPNDecoder
from shared.decoders.unet import UNetDecoder

__all__ = ["UFPNDecoder", "UNetDecoder"]
