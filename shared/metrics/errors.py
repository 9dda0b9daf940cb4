"""The error raised for bad evaluation input (files, boxes, scores, labels)."""

from __future__ import annotations

__all__ = ["EvaluationInputError"]


class EvaluationInputError(ValueError):
    """Evaluation input is malformed; the message names the file, the image and the field."""
