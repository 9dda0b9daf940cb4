"""A user's mistake as one plain line from ``python -m monai.bundle run``, not a 70-line double traceback.

MONAI's ``ConfigParser`` wraps whatever a config item raises in a ``RuntimeError`` naming the item
(``Failed to instantiate component ...``, ``Failed to evaluate ...``), so the project's own clear
:class:`~shared.io.errors.InputError` arrives at the top buried in the exception chain. The bundles'
``initialize`` calls :func:`report_user_errors` first: from then on an uncaught exception whose chain
holds an ``InputError`` prints ``error: <its message>`` and exits with status 2, like the tools. Any
other exception (a bug) keeps its full traceback, and ``MISSING_PIECE_DEBUG=1`` in the environment
shows the traceback for user errors too.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

from shared.io.errors import InputError

INPUT_ERROR_EXIT = 2
DEBUG_VARIABLE = "MISSING_PIECE_DEBUG"


def debugging() -> bool:
    """Whether the user asked for tracebacks (``MISSING_PIECE_DEBUG`` set to anything but ``""``/``0``)."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def find_input_error(error: BaseException | None) -> InputError | None:
    """The first :class:`InputError` in ``error``'s chain (causes and contexts), or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _excepthook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    found = find_input_error(error)
    if found is None or debugging():
        sys.__excepthook__(kind, error, traceback)
        return
    print(f"error: {found}", file=sys.stderr, flush=True)
    # a SystemExit from the hook sets the interpreter's exit status (it would otherwise be 1)
    sys.exit(INPUT_ERROR_EXIT)


def report_user_errors() -> None:
    """Install the hook that reports user errors as one line with exit status 2 (see the module docstring)."""
    sys.excepthook = _excepthook
