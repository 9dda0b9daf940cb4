"""Pack a bundle with its shipped weights into the MONAI Model Zoo's zip layout.

    python -m tools.package_bundle <bundle> --out dist/ [--version X --changelog "..."] [--wheel W.whl]

Writes ``<out>/<name>_v<version>.zip`` (``<name>/configs``, ``models``, ``docs``, ``LICENSE``,
``large_files.yml`` and the project's wheel), which ``python -m monai.bundle download --name <name>
--url file://<zip>`` unpacks. See docs/model_zoo.md, "Packaging a bundle".
"""

from __future__ import annotations

from shared.bundles.packaging import package_bundle
from tools._cli import check_writable_folder, run_cli
from tools.ship_weights import bundle_folder


def package(bundle: str, out: str = "dist", version: str | None = None, changelog: str | None = None,
            wheel: str | None = None) -> str:
    """Packs ``bundle`` into ``out``.

    Args:
        bundle: bundle folder or name under ``bundles/``.
        out: output folder of the zip.
        version: the packed bundle's version (a new one needs ``changelog``).
        changelog: what changed in ``version``.
        wheel: the project's wheel to carry (default: built from this checkout with pip).

    Returns:
        Path of the zip.
    """
    check_writable_folder(out, what="--out")
    version = None if version is None else str(version)  # fire reads 0.3 as a number
    return str(package_bundle(bundle_folder(bundle), out, version=version, changelog=changelog, wheel=wheel))


def main() -> None:
    run_cli(package)


if __name__ == "__main__":
    main()
