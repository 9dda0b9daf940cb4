import pytest

from tools.make_dataset import main as make_dataset_cli

TINY = dict(num_training=4, num_validation=1, num_test=2, num_unlabelled=1, shape=(40, 40, 24))


@pytest.fixture(scope="session")
def tiny_sizes():
    return dict(TINY)


@pytest.fixture(scope="session")
def tiny_lung(tmp_path_factory):
    """A tiny lung_ct data set written by the CLI (index 3 of training is an empty scan)."""
    out = tmp_path_factory.mktemp("lung")
    return out, make_dataset_cli("lung_ct", str(out), seed=0, **TINY)
