# Every folder under tests/ is a package (has __init__.py): test modules import as tests.<folder>.<name>, so
# basenames may repeat across folders, and shared helpers are imported as tests._cases.
import os

import numpy as np
import pytest
import torch

# Tests run on 2 cores next to each other: one thread each keeps timings stable.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
