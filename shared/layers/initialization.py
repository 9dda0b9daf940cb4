"""Weight initialisation shared by the networks (nnU-Net / nnDetection / RetinaNet conventions)."""

from __future__ import annotations

import math

from torch import nn

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def initialize_kaiming(module: nn.Module, negative_slope: float = 0.01) -> None:
    """He-normal weights and zero biases for every (transposed) convolution inside ``module``.

    Matches nnU-Net's ``InitWeights_He(1e-2)``: the gain accounts for the LeakyReLU's slope.

    Args:
        module: any module; only its convolutions are touched.
        negative_slope: the slope of the LeakyReLU the convolutions feed.
    """
    for layer in module.modules():
        if isinstance(layer, _CONVOLUTIONS):
            nn.init.kaiming_normal_(layer.weight, a=negative_slope)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def initialize_head_normal(module: nn.Module, std: float = 0.01, prior_probability: float | None = None) -> None:
    """RetinaNet head initialisation: normal(0, std) weights, zero biases.

    Args:
        module: the head; every convolution inside is re-initialised.
        std: standard deviation of the weights.
        prior_probability: when given, the biases of ``module`` itself (which must then be a
            convolution, the head's output layer) are set to ``-log((1 - p) / p)`` so that the sigmoid
            starts at ``p`` — the focal-loss paper's trick against a flood of negatives.
    """
    for layer in module.modules():
        if isinstance(layer, _CONVOLUTIONS):
            nn.init.normal_(layer.weight, mean=0.0, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    if prior_probability is not None:
        if not 0.0 < prior_probability < 1.0:
            raise ValueError(f"prior_probability must lie in (0, 1), got {prior_probability}")
        nn.init.constant_(module.bias, -math.log((1.0 - prior_probability) / prior_probability))
