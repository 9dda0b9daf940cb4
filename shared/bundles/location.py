"""Where a bundle's files are: the folder its config files are in, whatever the working directory.

MONAI's Model Zoo bundles say ``"bundle_root": "."`` and so only find their own files when run from
inside the bundle (or with ``--bundle_root``). MONAI itself knows better: ``ConfigWorkflow`` (what
``python -m monai.bundle run`` and ``create_workflow`` build) records the folder of the first config
file as ``config_root_path`` and, in ``run``, puts that folder's parent (the bundle) on ``sys.path``.
It just does not hand that folder to the config. :func:`config_bundle_root` does: the bundle whose
``configs/`` folder holds the config being run, so a copy of a bundle anywhere on disk uses its own
``models/`` whatever the working directory. ``--bundle_root DIR`` still overrides it (it replaces the
node before anything reads it).
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path
from typing import Sequence

CONFIG_FOLDER = "configs"


def config_bundle_root() -> str:
    """The absolute folder of the bundle whose config is being run.

    Looked up, in order: the ``ConfigWorkflow`` that is resolving the config (``monai.bundle run``,
    ``create_workflow``, torchrun); else the first ``--config_file`` on the command line (the scripts
    that build a bare ``ConfigParser``: ``verify_net_in_out``, ``ckpt_export``); else the working
    directory (the Model Zoo's ``"."``). For a config file in ``<bundle>/configs/`` it is ``<bundle>``,
    for a config file elsewhere its own folder (MONAI's ``ConfigWorkflow.run`` reasons the same way).
    """
    config_file = _workflow_config_file() or _command_line_config_file(sys.argv[1:])
    if config_file is None:
        return str(Path.cwd())
    return str(bundle_of(config_file))


def bundle_of(config_file: str | Path) -> Path:
    """The bundle folder of ``config_file``: the parent of its ``configs/`` folder, else its own folder."""
    folder = Path(config_file).resolve().parent
    return folder.parent if folder.name == CONFIG_FOLDER else folder


def _workflow_config_file() -> Path | None:
    from monai.bundle.workflows import ConfigWorkflow

    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, ConfigWorkflow):
                # config_root_path is the first config file's folder; a placeholder file name keeps
                # bundle_of's "configs/<file>" rule in one place
                return Path(candidate.config_root_path) / "config.json"
            frame = frame.f_back
    finally:
        del frame
    return None


def _command_line_config_file(arguments: Sequence[str]) -> str | None:
    for index, argument in enumerate(arguments):
        if argument.startswith("--config_file="):
            return _first_file(argument.split("=", 1)[1])
        if argument == "--config_file" and index + 1 < len(arguments):
            return _first_file(arguments[index + 1])
    return None


def _first_file(value: str) -> str | None:
    """The first path of a ``--config_file`` value: one path, ``"['a.json','b.json']"`` or ``"a.json,b.json"``."""
    value = value.strip()
    if value.startswith("["):
        try:
            files = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
        return str(files[0]) if files else None
    return value.split(",")[0] or None
