"""JSON-friendly layer specs and per-stage argument lists.

A layer spec is ``None`` (no layer), a name (``"instance"``) or a pair ``(name, kwargs)`` — a list
``["group", {"num_groups": 8}]`` as it comes out of JSON is accepted too. Names are MONAI's
(``monai.networks.layers.factories.Norm`` / ``Act``), so everything MONAI knows is available.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

LayerSpec = Union[str, tuple, list, None]

DEFAULT_NORM: tuple = ("instance", {"affine": True, "eps": 1e-5})
DEFAULT_ACT: tuple = ("leakyrelu", {"negative_slope": 0.01})


def split_spec(spec: LayerSpec, argument: str) -> tuple[str, dict[str, Any]] | None:
    """Splits a layer spec into its name and a fresh keyword dict.

    Args:
        spec: ``None``, a name, or ``(name, kwargs)`` (tuple or list).
        argument: the argument's name, for the error message.

    Returns:
        ``(lower-case name, kwargs copy)``, or ``None`` when the spec asks for no layer.
    """
    if spec is None or spec == "":
        return None
    if isinstance(spec, str):
        return spec.lower(), {}
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        return spec[0].lower(), dict(spec[1])
    raise ValueError(f"{argument}: expected None, a name or (name, {{kwargs}}), got {spec!r}")


def build_norm(spec: LayerSpec, channels: int, spatial_dims: int = 3) -> nn.Module | None:
    """Builds a normalisation layer from a spec.

    Besides MONAI's arguments, a group norm accepts ``channels_per_group`` (nnDetection's way of
    sizing it: ``num_groups = channels // channels_per_group``), so one spec fits every width.

    Args:
        spec: e.g. ``("instance", {"affine": True})`` or ``("group", {"channels_per_group": 16})``.
        channels: number of channels normalised.
        spatial_dims: 1, 2 or 3.

    Returns:
        The layer, or ``None`` for a ``None`` spec.
    """
    parts = split_spec(spec, "norm")
    if parts is None:
        return None
    name, kwargs = parts
    if "channels_per_group" in kwargs:
        per_group = int(kwargs.pop("channels_per_group"))
        if per_group < 1 or channels % per_group:
            raise ValueError(f"norm: channels_per_group={per_group} does not divide {channels} channels")
        kwargs["num_groups"] = channels // per_group
    return get_norm_layer((name, kwargs), spatial_dims=spatial_dims, channels=channels)


def build_activation(spec: LayerSpec) -> nn.Module | None:
    """Builds an activation layer from a spec (``("leakyrelu", {"negative_slope": 0.01})``).

    Args:
        spec: activation spec; ``None`` for none.

    Returns:
        The layer, or ``None`` for a ``None`` spec.
    """
    parts = split_spec(spec, "act")
    if parts is None:
        return None
    return get_act_layer(parts)


def per_stage(value: Any, num_stages: int, argument: str) -> list:
    """Broadcasts a scalar to one entry per stage, or checks a list has one entry per stage.

    Args:
        value: a scalar (int, float, bool, str, None) or a list/tuple with one entry per stage
            (so a per-stage setting that is itself a sequence must always be given as a list).
        num_stages: how many stages there are.
        argument: the argument's name, for the error message.

    Returns:
        A list of ``num_stages`` entries.

    Raises:
        ValueError: a list of the wrong length, naming ``argument``.
    """
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = list(value)
        if len(values) != num_stages:
            raise ValueError(
                f"{argument} has {len(values)} entries {values} but there are {num_stages} stages: "
                f"give one entry per stage or a single value for all"
            )
        return values
    return [value] * num_stages
