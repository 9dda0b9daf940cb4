"""Offline check of a bundle's ``metadata.json`` with MONAI's own ``verify_metadata``.

MONAI downloads the schema named in the metadata; these machines have no internet, so we ship a
schema with the fields MONAI's bundle specification makes mandatory (``docs/source/mb_specification``)
and hand MONAI its path, which it then uses without downloading.
"""

from __future__ import annotations

from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("metadata_schema.json")


def check_metadata(meta_file: str | Path) -> None:
    """Raise ``ValueError`` naming the first violation if ``meta_file`` does not match the schema."""
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(meta_file), filepath=str(SCHEMA_PATH))
