"""Ship a small weight file inside a bundle: copy it to ``models/``, list it with its sha256.

    python -m tools.ship_weights <bundle> <file> [--as models/<name>] [--half True] [--url URL]

``<bundle>`` is a folder or the name of one under ``bundles/``. An encoder manifest (``encoder.json``)
is shipped with the weight files it names. ``--half True`` stores float tensors in float16 (they load
back into float32 networks). See docs/model_zoo.md, "Shipping weights".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.bundles.shipping import ship_weights
from shared.io.errors import InputError
from tools._cli import run_cli

BUNDLES_FOLDER = Path(__file__).resolve().parents[1] / "bundles"


def bundle_folder(bundle: str) -> Path:
    """A bundle folder from a path or a name under the repository's ``bundles/``."""
    for candidate in (Path(bundle), BUNDLES_FOLDER / str(bundle)):
        if (candidate / "configs").is_dir():
            return candidate
    raise InputError(bundle, f"is neither a bundle folder nor a bundle name under {BUNDLES_FOLDER}")


def ship(bundle: str, file: str, half: bool = False, url: str | None = None, **options: Any) -> list[str]:
    """Copies ``file`` into the bundle and lists it in ``large_files.yml``.

    Args:
        bundle: bundle folder or name.
        file: the file to ship (a weight file, a model plan, an encoder manifest).
        half: store float tensors in float16.
        url: where the file can be downloaded from (default: its path in the repository).
        options: ``--as models/<name>`` (a Python keyword, hence not a named argument).

    Returns:
        The shipped files.
    """
    unknown = sorted(set(options) - {"as"})
    if unknown:
        raise InputError(None, f"unknown option(s) {', '.join('--' + name for name in unknown)}: "
                               "use --as models/<name>, --half True, --url URL")
    if not isinstance(half, bool):
        raise InputError(None, f"--half must be True or False, got {half!r}")
    shipped = ship_weights(bundle_folder(bundle), file, as_name=options.get("as"), half=half, url=url)
    return [str(path) for path in shipped]


def main() -> None:
    run_cli(ship)


if __name__ == "__main__":
    main()
