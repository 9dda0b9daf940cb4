"""Helpers the bundle configs call: where a bundle lives, and an offline check of its metadata."""

from shared.bundles.location import bundle_root
from shared.bundles.metadata import SCHEMA_PATH, check_metadata

__all__ = ["bundle_root", "check_metadata", "SCHEMA_PATH"]
