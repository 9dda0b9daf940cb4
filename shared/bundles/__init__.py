"""Helpers the bundle configs call: where a bundle lives (the folder of its configs), the network built
from its spec and recorded in the model plan, an offline check of its metadata, and user errors reported
as one line (with the output folder checked before any work)."""

from shared.bundles.location import bundle_of, config_bundle_root
from shared.bundles.metadata import SCHEMA_PATH, check_metadata
from shared.bundles.network import build_network, network_spec
from shared.bundles.user_errors import report_user_errors
from shared.io.writable import check_writable_folder

__all__ = ["build_network", "bundle_of", "check_metadata", "check_writable_folder", "config_bundle_root", "network_spec",
           "report_user_errors", "SCHEMA_PATH"]
