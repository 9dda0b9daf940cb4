"""Where a bundle's files are, whatever the working directory.

MONAI bundles usually say ``"bundle_root": "."``, which only works when run from inside the bundle.
Ours ask :func:`bundle_root` instead: the current folder when it is that bundle (the model-zoo way),
else the copy shipped next to the installed ``shared`` package. ``--bundle_root DIR`` still overrides.
"""

from __future__ import annotations

import json
from pathlib import Path

_REPOSITORY_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def bundle_root(name: str) -> str:
    """The folder of bundle ``name`` (the one whose ``configs/metadata.json`` names it)."""
    here = Path.cwd()
    if _is_bundle(here, name):
        return str(here)
    shipped = _REPOSITORY_BUNDLES / name
    if _is_bundle(shipped, name):
        return str(shipped)
    raise FileNotFoundError(
        f"bundle '{name}' is neither the current folder ({here}) nor shipped at {shipped}; "
        "run from inside the bundle or pass --bundle_root /path/to/bundle"
    )


def _is_bundle(folder: Path, name: str) -> bool:
    metadata = folder / "configs" / "metadata.json"
    if not metadata.is_file():
        return False
    return json.loads(metadata.read_text()).get("name", folder.name) == name or folder.name == name
