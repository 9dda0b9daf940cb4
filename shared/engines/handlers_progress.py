"""Progress bars for training and validation, shown by rank 0 only.

Validation of whole volumes takes long (sliding windows over every case): without a bar of its own a
run looks frozen while it validates, so the evaluator gets one too (``validate#handlers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine


class ProgressBar:
    """An ignite ``ProgressBar`` attached on rank 0, showing some of the iteration's scalar outputs.

    Args:
        description: the bar's label (e.g. ``"validation"``).
        output_keys: entries of the iteration's output dict to show (e.g. ``["loss"]``); none for
            an evaluator, whose output is not a dict of numbers.
        persist: keep each epoch's finished bar on the screen.
    """

    def __init__(self, description: str = "", *, output_keys: Sequence[str] = (), persist: bool = True):
        self.description, self.output_keys, self.persist = description, list(output_keys), bool(persist)

    def attach(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        from ignite.handlers import ProgressBar as IgniteProgressBar

        keys = self.output_keys

        def show(output: Any) -> dict[str, float]:
            return {key: output[key] for key in keys if isinstance(output, dict) and key in output}

        bar = IgniteProgressBar(persist=self.persist, desc=self.description or None)
        bar.attach(engine, output_transform=show if keys else None)
