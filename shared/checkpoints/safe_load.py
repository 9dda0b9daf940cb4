"""Reading weight files without executing code: ``torch.load(weights_only=True)`` only, and file hashes.

Checkpoints from other projects are pickles; unpickling arbitrary objects runs arbitrary code, so a
file that needs more than tensors and plain containers is refused with an explanation instead of
being loaded with ``weights_only=False``.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from shared.io.errors import InputError

# Plain containers beyond torch's default allow-list that trainers put into checkpoints (logging,
# counters); they carry data only, so allowing them executes nothing. (``defaultdict`` cannot be
# read by the weights-only unpickler at all.)
PLAIN_CONTAINERS = (collections.OrderedDict, collections.Counter, set, frozenset)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks.

    Args:
        path: the file.

    Returns:
        64 lower-case hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Loads a ``torch.save`` file on the CPU with ``weights_only=True``.

    Args:
        path: the file.

    Returns:
        Whatever the file holds (tensors, dicts, lists, numbers, strings).

    Raises:
        InputError: the file is missing, is not a torch file, or holds pickled Python objects that
            are not tensors or plain containers (those are never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    from shared.checkpoints.large_files import check_shipped_file  # imports this module

    check_shipped_file(path)  # a bundle's shipped weights must match their listed sha256
    try:
        with torch.serialization.safe_globals(list(PLAIN_CONTAINERS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        found = re.search(r"GLOBAL (\S+)", message)
        if found:
            raise InputError(
                path,
                f"holds pickled Python objects that are not tensors or plain containers (it needs "
                f"{found.group(1)}), and unpickling them could execute code. Refusing to load it; re-save "
                "the weights as a plain state dict (torch.save(model.state_dict(), ...)) in a trusted environment",
            ) from None
        detail = message.split("WeightsUnpickler error:")[-1].strip().splitlines()
        raise InputError(path, "is not a torch checkpoint that a weights-only load can read "
                               f"({detail[0] if detail else message})") from None
    except Exception as error:  # torch raises KeyError, RuntimeError, EOFError... on foreign bytes
        raise InputError(path, f"is not a readable torch checkpoint ({type(error).__name__}: {error})") from None
