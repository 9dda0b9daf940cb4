"""The preprocessed cache's key: a hash of what the preprocessing computes, and of the code computing it.

The key covers the resolved preprocessing transform chain (every transform's class and arguments, as the
bundle config built them: a plan's spacing or intensity statistics enter as arguments) and the package
version. Editing a transform in JSON, or the plan it reads, therefore gives a new key and a new cache
folder; nothing is ever reused across such a change, and no version number needs bumping by hand.

The chain is described from the built objects rather than from the config text, so the key is the same
whether a value was written inline, referenced with ``@`` or computed with ``$``, and different whenever
the value differs.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: the distribution that installs the ``shared`` package
DISTRIBUTION = "missing-piece-detection"
#: attributes that hold random state or per-call scratch, not settings
_IGNORED = {"R", "_do_transform", "lazy", "_lazy", "overrides", "_overrides"}
_MAX_DEPTH = 12


def package_version() -> str:
    """``shared.__version__``, else the installed distribution's version, else the source tree's pyproject."""
    import shared

    version = getattr(shared, "__version__", None)
    if version:
        return str(version)
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pyproject = Path(shared.__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return found.group(1) if found else "unknown"


def describe_transform(value: Any) -> Any:
    """A JSON-able description of a built transform (chain): class path and arguments, recursively.

    Arrays become lists, functions and classes their import paths, random generators are left out, and so
    are the attributes a transform names in ``drawn_attributes`` (what its last call drew, not a setting).
    """
    return _describe(value, 0, set())


def cache_key(transform: Any, *, length: int = 16) -> str:
    """Hex digest of :func:`describe_transform` of ``transform`` and :func:`package_version`."""
    content = {"preprocessing": describe_transform(transform), "version": package_version()}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:length]


def cache_description(transform: Any) -> dict[str, Any]:
    """What the key covers, written next to the cached cases (``preprocessing.json``) for people to read."""
    return {"key": cache_key(transform), "version": package_version(), "preprocessing": describe_transform(transform)}


def _describe(value: Any, depth: int, seen: set[int]) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else str(value)
    if isinstance(value, (np.generic,)):
        return _describe(value.item(), depth, seen)
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return {"array": np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).tolist()}
    if isinstance(value, (os.PathLike,)):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return _describe(value.value, depth, seen)
    if isinstance(value, (torch.dtype, np.dtype)) or value in (np.float32, np.float64, np.int16, np.int64):
        return str(value)
    if isinstance(value, (np.random.RandomState, np.random.Generator)):
        return None
    if isinstance(value, (list, tuple)):
        return [_describe(item, depth + 1, seen) for item in value]
    if isinstance(value, dict):
        return {str(key): _describe(item, depth + 1, seen) for key, item in value.items()}
    if isinstance(value, type) or callable(value) and not hasattr(value, "__dict__"):
        return _path(value)
    if depth > _MAX_DEPTH or id(value) in seen or not hasattr(value, "__dict__"):
        return _path(type(value))
    seen = seen | {id(value)}
    if hasattr(value, "__code__"):  # a function or lambda: its path and, for lambdas, its code
        return {"function": _path(value), "code": value.__code__.co_code.hex() if value.__name__ == "<lambda>" else None}
    ignored = _IGNORED.union(getattr(value, "drawn_attributes", ()))
    attributes = {key: item for key, item in sorted(vars(value).items()) if key not in ignored}
    return {"_target_": _path(type(value)), **{key: _describe(item, depth + 1, seen) for key, item in attributes.items()}}


def _path(value: Any) -> str:
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
