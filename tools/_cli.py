"""Running a tool from the command line: user errors as one plain line and exit code 2.

``MISSING_PIECE_DEBUG=1`` in the environment shows the full traceback instead (the bundles honour it
too, see :mod:`shared.bundles.user_errors`).
"""

from __future__ import annotations

import sys
from typing import Any

import fire

from shared.bundles.user_errors import INPUT_ERROR_EXIT, debugging
from shared.io.errors import InputError
# every tool checks its output location up front with these, before it works for minutes
from shared.io.writable import check_writable_file, check_writable_folder

__all__ = ["INPUT_ERROR_EXIT", "check_writable_file", "check_writable_folder", "run_cli"]


def run_cli(component: Any) -> None:
    """``fire.Fire(component)``, with :class:`InputError` printed plainly (no traceback), exit code 2."""
    try:
        fire.Fire(component)
    except InputError as error:
        if debugging():
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(INPUT_ERROR_EXIT)
