"""Anchors of the Retina U-Net: 27 shapes per position and level, fitted to the training boxes.

An anchor set is three sizes per axis (``anchor_sizes = [[w0, w1, w2], [h0, h1, h2], [d0, d1, d2]]``,
voxels at the first detection level) whose 3 × 3 × 3 products give the 27 shapes; level ``l`` scales
them by ``stride_l / stride_0`` per axis (strides may differ per axis on anisotropic data, so a level
may double its anchors in-plane only). Anchor ``a = (i_w · 3 + i_h) · 3 + i_d``.

The layout matches the network's heads: a head output (B, A·K, X_l, Y_l, Z_l) has channel ``a·K + k``,
and flattening it gives rows ordered level → x → y → z → anchor (position-major, anchor-minor). This is
the order of :meth:`AnchorGenerator.anchors_per_level` and of :func:`flatten_head_outputs`.

We do not use MONAI's ``AnchorGeneratorWithAnchorShape``: it rounds anchor corners to integers (which
distorts the small, fitted anchors of nodules) and derives strides from ``image // feature`` sizes,
which is wrong for padded odd shapes; this module is as short and caches per feature-map shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from shared.layers.strides import compact, per_axis


def anchor_shapes(anchor_sizes: Sequence[Sequence[float]]) -> np.ndarray:
    """The (A, 3) anchor shapes (width, height, depth) of a per-axis size set, in anchor order."""
    sizes = [list(map(float, axis)) for axis in anchor_sizes]
    if len(sizes) != 3:
        raise ValueError(f"anchor_sizes needs one list per spatial axis (3), got {len(sizes)}")
    return np.array(list(itertools.product(*sizes)), dtype=np.float64)


def level_strides(strides: Sequence[int | Sequence[int]]) -> np.ndarray:
    """(L, 3) per-axis strides of the detection levels, from ints or per-axis lists."""
    if not len(strides):
        raise ValueError("anchors need at least one detection stride")
    return np.array([per_axis(s, 3, "detection stride") for s in strides], dtype=np.float64)


class AnchorGenerator(nn.Module):
    """Anchors for every detection level, cached per feature-map shape.

    Args:
        anchor_sizes: per-axis sizes at the first detection level, e.g. ``[[4, 6, 8]] * 3`` (voxels).
        strides: stride of each detection level, fine → coarse: an int, or one per axis.

    The module holds no parameters (the cache is not a buffer, so it never enters a state dict).
    """

    def __init__(self, anchor_sizes: Sequence[Sequence[float]], strides: Sequence[int | Sequence[int]]):
        super().__init__()
        self.anchor_sizes = [list(map(float, axis)) for axis in anchor_sizes]
        self.shapes = anchor_shapes(self.anchor_sizes)
        self.axis_strides = level_strides(strides)  # (L, 3)
        self.strides = [compact(s) for s in self.axis_strides.astype(int).tolist()]
        self._cache: dict[tuple, list[Tensor]] = {}
        self._joined: dict[tuple, Tensor] = {}

    @property
    def num_anchors(self) -> int:
        """Anchors per position (27 for three sizes per axis)."""
        return len(self.shapes)

    def level_shapes(self, level: int) -> np.ndarray:
        """(A, 3) anchor shapes at a level: the base shapes × stride_l / stride_0, per axis."""
        return self.shapes * (self.axis_strides[level] / self.axis_strides[0])

    def anchors_per_level(self, grid_sizes: Sequence[Sequence[int]], device=None, dtype=torch.float32) -> list[Tensor]:
        """Anchors of every level for feature maps of the given spatial sizes.

        Args:
            grid_sizes: spatial size (X_l, Y_l, Z_l) of each level's feature map, fine → coarse.

        Returns:
            list over levels of (X_l·Y_l·Z_l·A, 6) xyzxyz voxel anchors in image coordinates; the cell
            ``i`` of stride ``s`` (on its axis) covers voxels ``[i·s, (i+1)·s)``, so its anchors are centred
            at ``(i + ½)·s``.
        """
        if len(grid_sizes) != len(self.strides):
            raise ValueError(f"{len(grid_sizes)} feature maps for {len(self.strides)} detection strides")
        key = (tuple(tuple(int(v) for v in g) for g in grid_sizes), str(device), dtype)
        if key not in self._cache:
            self._cache[key] = [self._level_anchors(level, g, device, dtype) for level, g in enumerate(key[0])]
        return self._cache[key]

    def all_anchors(self, grid_sizes: Sequence[Sequence[int]], device=None, dtype=torch.float32) -> Tensor:
        """The anchors of every level in one (Σ_l X_l·Y_l·Z_l·A, 6) tensor, cached per feature-map shape.

        The same tensor comes back for the same shapes, so the matcher can cache what it derives from it
        (the anchors' centres) instead of concatenating ~400,000 anchors every training step.
        """
        key = (tuple(tuple(int(v) for v in g) for g in grid_sizes), str(device), dtype)
        if key not in self._joined:
            self._joined[key] = torch.cat(self.anchors_per_level(grid_sizes, device=device, dtype=dtype))
        return self._joined[key]

    def _level_anchors(self, level: int, grid: Sequence[int], device, dtype) -> Tensor:
        axes = [(torch.arange(n, dtype=torch.float64) + 0.5) * float(s) for n, s in zip(grid, self.axis_strides[level])]
        centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 1, 3)
        half = torch.as_tensor(self.level_shapes(level) / 2.0, dtype=torch.float64).reshape(1, -1, 3)
        anchors = torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 6)
        return anchors.to(device=device, dtype=dtype)


def flatten_head_outputs(outputs: Sequence[Tensor], channels_per_anchor: int) -> Tensor:
    """Head outputs of all levels → one (B, Σ_l X_l·Y_l·Z_l·A, C) tensor in anchor order.

    Args:
        outputs: list over levels of (B, A·C, X_l, Y_l, Z_l) with channel ``a·C + c``.
        channels_per_anchor: C (num_classes for classification, 6 for box regression).

    Returns:
        (B, N_anchors, C), rows ordered level → x → y → z → anchor, as the anchors.
    """
    flat = []
    for out in outputs:
        batch, channels = out.shape[:2]
        num_anchors = channels // channels_per_anchor
        out = out.reshape(batch, num_anchors, channels_per_anchor, -1)  # (B, A, C, XYZ)
        flat.append(out.permute(0, 3, 1, 2).reshape(batch, -1, channels_per_anchor))
    return torch.cat(flat, dim=1)


def gather_head_outputs(outputs: Sequence[Tensor], channels_per_anchor: int, image: int, rows: Tensor) -> Tensor:
    """Rows of one image of :func:`flatten_head_outputs`, read in place instead of flattening every anchor.

    The regression loss needs the deltas of a few dozen positive anchors out of ~400,000; the values (and
    the gradients flowing back) are those of ``flatten_head_outputs(outputs, C)[image, rows]``.

    Args:
        outputs: list over levels of (B, A·C, X_l, Y_l, Z_l) with channel ``a·C + c``.
        channels_per_anchor: C.
        image: index in the batch.
        rows: (P,) int64 anchor indices in anchor order (level → x → y → z → anchor).

    Returns:
        (P, C), row ``i`` for anchor ``rows[i]``.
    """
    gathered, order, start = [], [], 0
    for out in outputs:
        num_anchors = out.shape[1] // channels_per_anchor
        stop = start + num_anchors * out[0, 0].numel()
        inside = torch.nonzero((rows >= start) & (rows < stop)).flatten()
        local = rows[inside] - start
        level = out[image].reshape(num_anchors, channels_per_anchor, -1)  # (A, C, XYZ), a view
        gathered.append(level[local % num_anchors, :, local // num_anchors])  # (P_l, C)
        order.append(inside)
        start = stop
    values, order = torch.cat(gathered), torch.cat(order)
    if torch.equal(order, torch.arange(len(order), device=order.device)):  # rows sorted: already in place
        return values
    return values[torch.argsort(order)]
