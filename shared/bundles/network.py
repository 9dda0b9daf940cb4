"""The network a bundle builds, recorded at training so that inference rebuilds exactly that network.

``network_def`` in ``train.json`` calls :func:`build_network` with the class and its arguments; the
network it returns carries its spec (``{"target": "<module>.<Class>", "arguments": {...}}``, resolved
JSON values), which training writes into ``model_plan.json`` under ``"network"``. ``network_def`` in
``inference.json``/``evaluate.json`` calls :func:`build_network` with ``plan=@model_dir``: the trained
model's spec then wins over the config's own arguments, so a model trained with ``quick.json`` (or any
override) runs with the plain inference config. The config's arguments serve when there is no trained
model yet (``verify_net_in_out``, ``ckpt_export`` of a fresh bundle) and add what the plan does not
record (``--network_def#dense_output True`` for export).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from shared.io.errors import InputError

logger = logging.getLogger(__name__)

MODEL_PLAN = "model_plan.json"
PLAN_KEY = "network"
ALLOWED_PACKAGES = ("shared.", "monai.")


def build_network(target: str, *, plan: str | os.PathLike | None = None, **arguments: Any) -> nn.Module:
    """``target(**arguments)``, or the network a trained model's plan records.

    Args:
        target: the network class, ``"shared.…"`` or ``"monai.…"`` (a bundle's ``_target_`` rule).
        plan: a model folder (or its ``model_plan.json``); when it holds a plan with a ``"network"``
            spec, that spec's class and arguments replace ``target`` and ``arguments`` (arguments the
            plan does not record are kept). A plan without one (older models) still gives its
            ``"encoder"``. A missing file leaves the config's own network.
        arguments: the class's keyword arguments (JSON values).

    Returns:
        the network, with its spec in ``network.network_spec`` (see :func:`network_spec`).
    """
    spec = {"target": target, "arguments": dict(arguments)}
    if plan is not None:
        spec = _planned(spec, Path(plan))
    network = _import(spec["target"])(**spec["arguments"])
    network.network_spec = spec
    return network


def network_spec(network: nn.Module) -> dict[str, Any]:
    """The JSON spec :func:`build_network` recorded on ``network`` (unwrapping DDP and detectors' ``network``).

    Raises:
        ValueError: when the network was not built by :func:`build_network`, or an argument is not JSON
            (a built module instead of a spec), naming the argument.
    """
    for candidate in (network, getattr(network, "module", None), getattr(network, "network", None)):
        spec = getattr(candidate, "network_spec", None)
        if spec is not None:
            break
    else:
        raise ValueError("the network was not built by shared.bundles.build_network: its spec is unknown")
    for name, value in spec["arguments"].items():
        try:
            json.dumps(value)
        except TypeError as error:
            raise ValueError(f"network argument {name!r} is not a JSON value ({type(value).__name__}): "
                             "give the network a spec, not a built object, so the model plan can rebuild it") from error
    return json.loads(json.dumps(spec))


def _planned(spec: dict[str, Any], plan: Path) -> dict[str, Any]:
    path = plan / MODEL_PLAN if plan.is_dir() or plan.suffix != ".json" else plan
    if not path.is_file():
        return spec
    recorded = json.loads(path.read_text())
    planned = recorded.get(PLAN_KEY)
    if planned is None:
        # plans written before the network spec: they record the (planned) encoder only
        if recorded.get("encoder") is not None and "encoder" in spec["arguments"]:
            planned = {"target": spec["target"], "arguments": {"encoder": recorded["encoder"]}}
        else:
            return spec
    if not isinstance(planned, dict) or "target" not in planned or not isinstance(planned.get("arguments"), dict):
        raise InputError(path, f'"{PLAN_KEY}" must be {{"target": "<module>.<Class>", "arguments": {{...}}}}')
    changed = sorted(name for name, value in planned["arguments"].items()
                     if name in spec["arguments"] and spec["arguments"][name] != value)
    if planned["target"] != spec["target"] or changed:
        logger.info("network from the model plan %s: %s%s", path, planned["target"],
                    f" ({', '.join(changed)} as trained, not as in the config)" if changed else "")
    return {"target": planned["target"], "arguments": {**spec["arguments"], **planned["arguments"]}}


def _import(target: str) -> type[nn.Module]:
    if not target.startswith(ALLOWED_PACKAGES) or "." not in target:
        raise ValueError(f"network target {target!r}: expected a class in shared.* or monai.*")
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)
