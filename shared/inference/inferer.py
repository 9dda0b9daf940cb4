"""MONAI ``Inferer`` for whole volumes: sliding-window detection with any detector of the interface.

A bundle names it as ``validate#inferer`` (in ``train.json``) and as ``inferer`` (in ``inference.json``
and ``evaluate.json``); its settings are the bundle's ``inference`` dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.inferers import Inferer
from torch import Tensor, nn

from shared.inference.sliding_window import predict_volume, split_settings


class SlidingWindowDetectionInferer(Inferer):
    """``inferer(inputs (1, C, X, Y, Z), network=detector or list of detectors) -> boxes of the volume``.

    Args:
        patch_size: tile size (X, Y, Z), as in training.
        settings: keywords of :func:`shared.inference.sliding_window.predict_volume` (``overlap``,
            ``mirror``, ``batch_size``, ``sigma_scale``, ``cluster_iou``, ``score_threshold``,
            ``min_size``, ``detections_per_volume``): a bundle's ``inference`` dict.

    Raises:
        ValueError: naming a setting that ``predict_volume`` does not take (at construction).
    """

    def __init__(self, patch_size: Sequence[int], settings: Mapping[str, Any] | None = None):
        super().__init__()
        self.patch_size = tuple(int(size) for size in patch_size)
        self.settings = dict(settings or {})
        split_settings(self.settings)  # an unknown setting fails when the config is parsed, not mid-run

    def __call__(self, inputs: Tensor, network: nn.Module | Sequence[nn.Module], *args: Any,
                 **kwargs: Any) -> dict[str, Tensor]:
        """Detect the objects of one whole preprocessed volume.

        Args:
            inputs: (1, C, X, Y, Z).
            network: a detector (:class:`shared.detectors.interface.Detector`) or a list of them.

        Returns:
            ``{"boxes": (M, 6) xyzxyz voxel of the volume, "scores": (M,), "labels": (M,) int64}`` on
            ``inputs``' device, sorted by score.
        """
        if inputs.dim() != 5 or inputs.shape[0] != 1:
            raise ValueError(f"inputs: expected one volume (1, C, X, Y, Z), got shape {tuple(inputs.shape)}")
        return predict_volume(network, inputs[0], patch_size=self.patch_size, **self.settings)
