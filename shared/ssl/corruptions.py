"""The Models Genesis corruptions as tensor functions, vectorised (no Python loop over voxels or windows).

Models Genesis (Zhou et al. 2019/2021) learns by restoring a volume from a corrupted copy: local voxel
shuffling, a non-linear intensity curve, and in-/out-painting with noise. Each corruption is split in
two: drawing its parameters (a few numbers from a ``numpy.random.RandomState``, so MONAI's
``set_random_state`` makes them reproducible) and applying them (torch, on whole tensors; the bulk
random numbers come from a ``torch.Generator``). The transforms in :mod:`shared.ssl.models_genesis`
are thin wrappers.

Two departures from the original code, both deliberate: the intensity curve is applied on the
volume rescaled to [0, 1] and mapped back (the original assumes [0, 1] data; nnssl clamps z-scored
data to [0, 1], which discards every negative intensity), and painting noise is uniform over the
volume's own intensity range rather than over [0, 1]. The per-volume range is taken per channel.
Volumes are channel-first (C, X, Y, Z).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# ------------------------------------------------------------------------------------------------ shuffle


def draw_shuffle_windows(spatial_shape: Sequence[int], num_windows: int, random_state: np.random.RandomState,
                         *, max_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Draws the windows of a local shuffle: sizes 1..``max_fraction``·dim per axis, anywhere inside.

    Args:
        spatial_shape: (X, Y, Z).
        num_windows: how many windows (10,000 in Models Genesis).
        random_state: the source of randomness.
        max_fraction: largest window edge as a fraction of the axis (at least 1 voxel).

    Returns:
        ``(corners, sizes)``, int64 arrays of shape (W, 3): the first voxel and the edge of each window.
    """
    shape = np.asarray(spatial_shape, dtype=np.int64)
    largest = np.maximum(1, (shape * max_fraction).astype(np.int64))
    sizes = random_state.randint(1, largest + 1, size=(num_windows, len(shape))).astype(np.int64)
    corners = (random_state.random_sample((num_windows, len(shape))) * (shape - sizes + 1)).astype(np.int64)
    return corners, sizes


def _window_voxel_indices(corners: torch.Tensor, sizes: torch.Tensor,
                          spatial_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear voxel index and window id of every voxel of every window, windows in order, each row-major.

    Per-voxel gathers dominate at 10⁶–10⁷ voxels, so the indices are built coarse to fine: one base
    index per x-plane of a window, then per z-row, then the voxels of a row are consecutive.
    """
    _, size_y, size_z = (int(n) for n in spatial_shape)
    windows = torch.arange(len(sizes))
    # x-planes: one per (window, x)
    plane_window = torch.repeat_interleave(windows, sizes[:, 0])
    plane_x = torch.arange(len(plane_window)) - torch.repeat_interleave(torch.cumsum(sizes[:, 0], 0) - sizes[:, 0],
                                                                         sizes[:, 0])
    plane_corner = corners[plane_window]
    plane_base = ((plane_corner[:, 0] + plane_x) * size_y + plane_corner[:, 1]) * size_z + plane_corner[:, 2]
    rows_per_plane = sizes[plane_window, 1]
    # z-rows: one per (window, x, y)
    row_plane_start = torch.repeat_interleave(torch.cumsum(rows_per_plane, 0) - rows_per_plane, rows_per_plane)
    row_y = torch.arange(len(row_plane_start)) - row_plane_start
    row_base = torch.repeat_interleave(plane_base, rows_per_plane) + row_y * size_z
    row_length = torch.repeat_interleave(sizes[plane_window, 2], rows_per_plane)
    row_start = torch.cumsum(row_length, 0) - row_length
    # voxels: consecutive along z inside a row
    target = torch.arange(int(row_length.sum())) + torch.repeat_interleave(row_base - row_start, row_length)
    window = torch.repeat_interleave(windows, sizes.prod(dim=1))
    return target, window


def shuffle_windows(volume: torch.Tensor, corners: torch.Tensor | np.ndarray, sizes: torch.Tensor | np.ndarray,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Permutes the voxels inside each window at random (the same permutation for every channel).

    Every window reads the original volume; where windows overlap, the later window's values win
    (as in the sequential original), so each window that no later one overlaps holds exactly its
    own original values, permuted.

    Args:
        volume: the volume.
        corners: first voxel of each window.
        sizes: edge of each window per axis.
        generator: CPU random generator for the permutations.

    Returns:
        The shuffled volume (a new tensor).

    Shape:
        volume: (C, X, Y, Z); corners, sizes: (W, 3).
    """
    device = volume.device
    corners = torch.as_tensor(corners, dtype=torch.int64)
    sizes = torch.as_tensor(sizes, dtype=torch.int64)
    if corners.numel() == 0:
        return volume.clone()
    target, window = _window_voxel_indices(corners, sizes, volume.shape[1:])
    # Random keys sorted inside each window: the window id in the high bits keeps windows apart.
    keys = window * (1 << 31) + torch.randint(0, 1 << 31, (len(window),), generator=generator)
    source = target[torch.argsort(keys)]
    # The last window over a voxel wins: keep only the elements of each voxel's highest window id.
    owner = torch.full((volume[0].numel(),), -1, dtype=torch.int64).scatter_reduce(0, target, window, "amax")
    kept = torch.nonzero(owner[target] == window).squeeze(1)  # exactly one element per covered voxel
    flat = volume.reshape(volume.shape[0], -1)
    shuffled = flat.clone()
    shuffled[:, target[kept].to(device)] = flat[:, source[kept].to(device)]
    return shuffled.view_as(volume)


# ------------------------------------------------------------------------------------------------ intensity


def draw_bezier_controls(random_state: np.random.RandomState) -> np.ndarray:
    """The two inner control points of a cubic Bézier from (0, 0) to (1, 1), uniform in the unit square.

    Returns:
        (4, 2) float64 control points, the first (0, 0) and the last (1, 1).
    """
    inner = random_state.random_sample((2, 2))
    return np.concatenate([[[0.0, 0.0]], inner, [[1.0, 1.0]]])


def bezier_curve(controls: np.ndarray | torch.Tensor, num_points: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """A monotone intensity curve from a cubic Bézier: its x and its y values, each sorted.

    A Bézier through random control points can turn back on itself; sorting x and y separately (as
    Models Genesis does) turns it into a monotone map of [0, 1] onto [0, 1].

    Args:
        controls: (4, 2) control points.
        num_points: samples along the curve.

    Returns:
        ``(xs, ys)``, float64 tensors of ``num_points`` ascending values from 0 to 1.
    """
    controls = torch.as_tensor(controls, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, num_points, dtype=torch.float64)[:, None]
    basis = torch.cat([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], dim=1)  # Bernstein
    points = basis @ controls
    return torch.sort(points[:, 0]).values, torch.sort(points[:, 1]).values


def interpolate(values: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear ``numpy.interp`` for tensors: ``values`` mapped through the points (xs, ys).

    Args:
        values: anything inside [xs[0], xs[-1]] (values outside take the end values).
        xs: ascending sample positions.
        ys: the curve's values there.

    Returns:
        Interpolated values, the dtype of ``values``.
    """
    xs, ys = xs.to(values.device), ys.to(values.device)
    flat = values.reshape(-1).to(xs.dtype).clamp(xs[0], xs[-1])
    index = (torch.searchsorted(xs, flat, right=True) - 1).clamp(0, len(xs) - 2)
    left, right = xs[index], xs[index + 1]
    fraction = ((flat - left) / (right - left).clamp_min(1e-12)).clamp(0.0, 1.0)
    mapped = ys[index] + fraction * (ys[index + 1] - ys[index])
    return mapped.view(values.shape).to(values.dtype)


def channel_range(volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel minimum and maximum, shaped (C, 1, 1, 1) to broadcast over a (C, X, Y, Z) volume."""
    flat = volume.reshape(volume.shape[0], -1)
    view = (-1,) + (1,) * (volume.ndim - 1)
    return flat.amin(dim=1).view(view), flat.amax(dim=1).view(view)


def map_through_table(unit: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Maps values in [0, 1] through a curve sampled at equally spaced points, linearly between them.

    Equal spacing makes the lookup a multiplication and a floor instead of a search (the cost of
    :func:`interpolate` on 10⁶–10⁷ voxels).

    Args:
        unit: values in [0, 1] (clamped).
        table: the curve at ``linspace(0, 1, len(table))``.

    Returns:
        Mapped values, the dtype of ``unit``.
    """
    table = table.to(device=unit.device, dtype=unit.dtype)
    position = unit.clamp(0.0, 1.0) * (len(table) - 1)
    index = position.floor().long().clamp_max(len(table) - 2)
    fraction = position - index
    left = table[index]
    return left + fraction * (table[index + 1] - left)


def bezier_intensity(volume: torch.Tensor, controls: np.ndarray | torch.Tensor, *, invert: bool = False,
                     num_points: int = 1000, table_size: int = 4096) -> torch.Tensor:
    """Maps intensities through a Bézier curve on [0, 1], each channel rescaled there and back.

    The curve maps 0 to 0 and 1 to 1 (or, inverted, 0 to 1 and 1 to 0), so the channel keeps its
    minimum and maximum: z-scored data stay z-scored-looking, nothing is clamped.

    Args:
        volume: intensities in any range.
        controls: (4, 2) Bézier control points (:func:`draw_bezier_controls`).
        invert: use the decreasing curve (the sorted y values reversed): bright becomes dark.
        num_points: samples along the curve.
        table_size: equally spaced samples of the curve used for the voxel lookup.

    Returns:
        The transformed volume, the dtype of ``volume``; a constant channel is returned unchanged.

    Shape:
        volume: (C, X, Y, Z).
    """
    xs, ys = bezier_curve(controls, num_points)
    if invert:
        ys = ys.flip(0)
    table = interpolate(torch.linspace(0.0, 1.0, table_size, dtype=torch.float64), xs, ys)
    low, high = channel_range(volume)
    span = high - low
    scaled = (volume - low) / torch.where(span > 0, span, torch.ones_like(span))
    mapped = map_through_table(scaled, table) * span + low
    return torch.where(span > 0, mapped, volume)


# ------------------------------------------------------------------------------------------------ painting


def _box_start(random_state: np.random.RandomState, dim: int, size: int, margin: int = 3) -> int:
    """A start so the box fits, ``margin`` voxels from the border where the axis is long enough."""
    low = min(margin, dim - size)
    high = max(low, dim - size - margin)
    return int(random_state.randint(low, high + 1))


def draw_inpainting_boxes(spatial_shape: Sequence[int], random_state: np.random.RandomState, *,
                          max_boxes: int = 5, continue_prob: float = 0.95) -> np.ndarray:
    """Boxes to fill with noise: up to ``max_boxes``, each edge dim/6..dim/3 of its axis.

    One more box is drawn with probability ``continue_prob`` each time, up to ``max_boxes`` (Models
    Genesis: 5 and 0.95), so there may be none.

    Returns:
        (K, 6) int64 boxes, xyzxyz voxel, end exclusive.
    """
    boxes = []
    while len(boxes) < max_boxes and random_state.random_sample() < continue_prob:
        box = []
        for dim in spatial_shape:
            size = int(random_state.randint(max(1, dim // 6), max(1, dim // 3) + 1))
            box.append((_box_start(random_state, dim, size), size))
        boxes.append([start for start, _ in box] + [start + size for start, size in box])
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 6)


def draw_outpainting_boxes(spatial_shape: Sequence[int], random_state: np.random.RandomState, *,
                           max_boxes: int = 5, continue_prob: float = 0.95) -> np.ndarray:
    """Boxes whose content is kept when the rest is replaced by noise: one always, up to ``max_boxes``.

    Each edge is the axis length less 3/7..4/7 of it (Models Genesis' out-painting).

    Returns:
        (K, 6) int64 boxes, xyzxyz voxel, end exclusive; K ≥ 1.
    """
    boxes = []
    while not boxes or (len(boxes) < max_boxes and random_state.random_sample() < continue_prob):
        box = []
        for dim in spatial_shape:
            size = max(1, dim - int(random_state.randint(3 * dim // 7, 4 * dim // 7 + 1)))
            box.append((_box_start(random_state, dim, size), size))
        boxes.append([start for start, _ in box] + [start + size for start, size in box])
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 6)


def _uniform_in_range(volume: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    low, high = channel_range(volume)
    noise = torch.rand(volume.shape, generator=generator, dtype=torch.float32).to(volume.device, volume.dtype)
    return low + noise * (high - low)


def inpaint(volume: torch.Tensor, boxes: np.ndarray | torch.Tensor,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Fills the boxes with uniform noise over each channel's intensity range; the rest is untouched.

    Args:
        volume: the volume.
        boxes: (K, 6) xyzxyz voxel, end exclusive.
        generator: CPU random generator for the noise.

    Returns:
        The painted volume (a new tensor).

    Shape:
        volume: (C, X, Y, Z).
    """
    painted = volume.clone()
    if len(boxes):
        noise = _uniform_in_range(volume, generator)
        for x0, y0, z0, x1, y1, z1 in torch.as_tensor(boxes).tolist():
            painted[:, x0:x1, y0:y1, z0:z1] = noise[:, x0:x1, y0:y1, z0:z1]
    return painted


def outpaint(volume: torch.Tensor, boxes: np.ndarray | torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Replaces everything outside the boxes by uniform noise over each channel's intensity range.

    Args:
        volume: the volume.
        boxes: (K, 6) xyzxyz voxel, end exclusive: the regions kept.
        generator: CPU random generator for the noise.

    Returns:
        The painted volume (a new tensor).

    Shape:
        volume: (C, X, Y, Z).
    """
    painted = _uniform_in_range(volume, generator)
    for x0, y0, z0, x1, y1, z1 in torch.as_tensor(boxes).tolist():
        painted[:, x0:x1, y0:y1, z0:z1] = volume[:, x0:x1, y0:y1, z0:z1]
    return painted
