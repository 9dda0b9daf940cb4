"""The one error type for bad user input, so tools can report it without a traceback."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input from a user: says which file, what is wrong with it and, where it helps, what to do."""

    def __init__(self, source: str | os.PathLike | None, problem: str):
        self.source = None if source is None else os.fspath(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)
