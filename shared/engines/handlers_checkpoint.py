"""Checkpoints with exact resume: a run killed at any moment and started again ends with the same
weights and files as a run never interrupted.

One handler both saves and resumes, because the two share one file convention
(``output_dir/checkpoints/last_checkpoint_<iteration>.pt``) and one guarantee:

- a checkpoint is written whole beside the previous one (:func:`shared.io.atomic.save_torch`), which is
  deleted only then, so a kill while writing leaves the previous one complete;
- within an epoch one is written every ``every`` iterations, and one at each epoch's end, after that
  epoch's validation and best-model saving (list this handler after those in ``train#handlers``), so a
  checkpoint at an epoch's end means the epoch is complete, validation included;
- at the start the last checkpoint is loaded (model, optimizer, trainer state, AMP scaler): the trainer
  continues at its iteration, the LR schedule and freeze phase are functions of that iteration, the
  data sampler moves to it (:class:`shared.engines.sampler.ResumableBatchSampler`);
- a finished run started again says so, trains nothing and only writes its final weights again
  (:class:`shared.engines.handlers_model.ModelSaver`, on ``COMPLETED``); raised ``max_epochs`` train on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from shared.checkpoints.safe_load import read_checkpoint
from shared.engines.trainer import unwrap
from shared.io.atomic import TEMPORARY_PATTERNS, remove_orphaned_temporaries, save_torch
from shared.io.errors import InputError

logger = logging.getLogger(__name__)

LAST_PREFIX = "last"
CHECKPOINT_FOLDER = "checkpoints"
#: temporaries a killed checkpoint write leaves: ours, and ignite's ``DiskSaver`` (earlier versions)
CHECKPOINT_TEMPORARIES = (*TEMPORARY_PATTERNS, "tmp*")


class ResumableCheckpoint:
    """Saves ``checkpoints/last_checkpoint_<iteration>.pt`` and resumes from the last one at the start.

    The checkpoint holds ``{"model": <network, unwrapped from DDP>, "optimizer", "trainer": <engine
    state>, "scaler" (with AMP)}``; the trainer's own ``network``, ``optimizer`` and ``scaler`` are used.

    Args:
        output_dir: the run's folder; checkpoints go to ``output_dir/checkpoints``.
        every: iterations between checkpoints within an epoch (one is also written at each epoch's end).
        resume: load the last checkpoint at the start (False: train from nothing, overwriting).
    """

    def __init__(self, output_dir: str | os.PathLike, *, every: int = 500, resume: bool = True):
        if every < 1:
            raise ValueError(f"every: expected a positive number of iterations, got {every}")
        self.output_dir, self.every, self.resume = Path(output_dir), int(every), bool(resume)

    @property
    def folder(self) -> Path:
        return self.output_dir / CHECKPOINT_FOLDER

    def attach(self, engine: Engine) -> None:
        """Resume on ``STARTED``; save within epochs and at each epoch's end."""
        engine.add_event_handler(Events.STARTED, self.start)

        def within_epoch(engine: Engine, iteration: int) -> bool:
            return iteration % self.every == 0 and iteration % engine.state.epoch_length != 0

        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=within_epoch), self.save)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    @staticmethod
    def _objects(engine: Any) -> dict[str, Any]:
        objects = {"model": unwrap(engine.network), "optimizer": engine.optimizer, "trainer": engine}
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            objects["scaler"] = scaler
        return objects

    def save(self, engine: Engine) -> Path:
        """Write the checkpoint of the current iteration whole, then delete the older ones (rank 0)."""
        path = self.folder / f"{LAST_PREFIX}_checkpoint_{engine.state.iteration}.pt"
        state = {name: item.state_dict() for name, item in self._objects(engine).items()}
        if idist.get_rank() == 0:
            save_torch(state, path)
            self.remove_older_checkpoints()
        return path

    def remove_older_checkpoints(self) -> None:
        for stale in self.checkpoints()[:-1]:
            stale.unlink(missing_ok=True)

    def checkpoints(self) -> list[Path]:
        """The complete checkpoints in the folder, oldest first."""
        found = self.folder.glob(f"{LAST_PREFIX}_checkpoint_*.pt")
        return sorted((path for path in found if path.stem.rsplit("_", 1)[-1].isdigit()),
                      key=lambda path: int(path.stem.rsplit("_", 1)[-1]))

    def last_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def start(self, engine: Engine) -> None:
        """Clean what a kill left, then load the last checkpoint (every rank loads the same file)."""
        if idist.get_rank() == 0:
            remove_orphaned_temporaries(self.output_dir)
            remove_orphaned_temporaries(self.folder, CHECKPOINT_TEMPORARIES)
            self.remove_older_checkpoints()  # a kill between writing a checkpoint and deleting the older one
        if idist.get_world_size() > 1:
            idist.barrier()  # no rank looks for checkpoints while rank 0 deletes
        checkpoint = self.last_checkpoint() if self.resume else None
        if checkpoint is None:
            return
        logger.info("resuming from %s", checkpoint)
        max_epochs = engine.state.max_epochs
        self._load(engine, checkpoint)
        engine.state.max_epochs = max_epochs  # the checkpoint's is the old run's; a raised one trains on
        total = max_epochs * engine.state.epoch_length
        if engine.state.iteration > total:
            raise InputError(checkpoint, f"is at iteration {engine.state.iteration}, past this run's {total} "
                                         f"({max_epochs} epochs of {engine.state.epoch_length}): raise the "
                                         f"epochs, or {_advice(checkpoint)}")
        if engine.state.iteration == total:
            logger.info("training finished before (%s is at iteration %d of %d): nothing to train; to train "
                        "again from nothing delete %s, to train longer raise the epochs", checkpoint,
                        engine.state.iteration, total, checkpoint.parent)

    def _load(self, engine: Engine, checkpoint: Path) -> None:
        """A file that cannot be resumed from is one clear error naming it."""
        try:
            state = read_checkpoint(checkpoint)
        except InputError as error:
            reason = _first_line(error.problem).split(". ")[0]  # not read_checkpoint's advice to re-save weights
            raise InputError(checkpoint, f"cannot resume from this checkpoint (it {reason}); "
                                         f"{_advice(checkpoint)}") from None
        try:
            Checkpoint.load_objects(self._objects(engine), state)
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise InputError(checkpoint, "cannot resume from this checkpoint, it was written by another kind of "
                                         f"run or configuration ({_first_line(str(error))}); "
                                         f"{_advice(checkpoint)}") from None


def _advice(checkpoint: Path) -> str:
    return (f"delete it (or the whole {checkpoint.parent.name} folder) to train this run again from nothing "
            "(tools.pipeline: --force True)")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text
