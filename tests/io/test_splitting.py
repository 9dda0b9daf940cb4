import pytest

from shared.io.splitting import split_validation


def test_split_is_seeded_ordered_and_complete():
    entries = [{"i": i} for i in range(10)]
    training, validation = split_validation(entries, 0.2, seed=0)
    assert len(validation) == 2 and len(training) == 8
    assert sorted(e["i"] for e in training + validation) == list(range(10))
    assert [e["i"] for e in training] == sorted(e["i"] for e in training)
    assert split_validation(entries, 0.2, seed=0) == (training, validation)
    assert split_validation(entries, 0.2, seed=1) != (training, validation)
    assert len(split_validation(entries[:2], 0.1, seed=0)[1]) == 1  # at least one held out
    assert split_validation(entries, 0.0, seed=0) == (entries, [])
    with pytest.raises(ValueError):
        split_validation(entries, 1.0, seed=0)
