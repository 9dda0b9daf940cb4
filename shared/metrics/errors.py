"""The error raised for bad evaluation input (files, boxes, scores, labels)."""

from __future__ import annotations

import os

from shared.io.errors import InputError

__all__ = ["EvaluationInputError"]


class EvaluationInputError(InputError):
    """Evaluation input is malformed; the message names the file, the image and the field.

    A project :class:`InputError`, so ``tools._cli.run_cli`` prints it as one line (exit status 2).

    Args:
        problem: the message; the evaluation readers start it with the file (and image, entry, field).
        source: the file, when the message does not already start with it.
    """

    def __init__(self, problem: str, source: str | os.PathLike | None = None):
        super().__init__(source, problem)
