"""Running a tool from the command line: user errors as one plain line and exit code 2."""

from __future__ import annotations

import sys
from typing import Any

import fire

from shared.io.errors import InputError

INPUT_ERROR_EXIT = 2


def run_cli(component: Any) -> None:
    """``fire.Fire(component)``, with :class:`InputError` printed plainly (no traceback), exit code 2."""
    try:
        fire.Fire(component)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(INPUT_ERROR_EXIT)
