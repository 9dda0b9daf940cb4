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
