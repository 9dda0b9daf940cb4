"""Loading a trained model's own weights (``model.pt``) into the network its bundle builds."""

from __future__ import annotations

import copy
import os

from torch import nn

from shared.checkpoints.safe_load import read_checkpoint
from shared.io.errors import InputError

DETECTOR_PREFIX = "network."


def load_weights(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state dict saved by our trainer into ``network``, strictly.

    Raises:
        InputError: naming the file and listing the missing, unexpected and mis-shaped keys, when the
            checkpoint was made for another architecture (nothing is loaded then).
    """
    state = read_checkpoint(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a "last" training checkpoint: model, optimizer, trainer
    target_keys = network.state_dict().keys()
    if state and all(key.startswith(DETECTOR_PREFIX) for key in state) and not any(
            key.startswith(DETECTOR_PREFIX) for key in target_keys):
        # the trainer checkpoints the detector, which holds the network under "network."
        state = {key[len(DETECTOR_PREFIX):]: value for key, value in state.items()}
    target = network.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mis_shaped = sorted(key for key in set(target) & set(state) if tuple(target[key].shape) != tuple(state[key].shape))
    if missing or unexpected or mis_shaped:
        raise InputError(path, "checkpoint does not fit this network (another architecture or configuration?): "
                               f"{_listing('missing', missing)}{_listing('unexpected', unexpected)}"
                               f"{_listing('different shape', mis_shaped)}")
    network.load_state_dict(state)
    return network


def loaded_copies(network: nn.Module, paths: list[str | os.PathLike]) -> list[nn.Module]:
    """One copy of ``network`` per checkpoint (a fold ensemble), each with its weights, in eval mode."""
    return [load_weights(copy.deepcopy(network), path).eval() for path in paths]


def _listing(kind: str, keys: list[str], shown: int = 8) -> str:
    if not keys:
        return ""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"\n  {len(keys)} {kind}: {', '.join(keys[:shown])}{more}"
