import numpy as np
import pytest
from monai.transforms import Randomizable

from shared.data.multi_dataset_sampling import MultiDatasetSampleDataset, MultiDatasetSampler, dataset_probabilities

SIZES = {"small": 4, "medium": 100, "large": 2500}


def test_probabilities_follow_the_exponent():
    assert dataset_probabilities(SIZES) == pytest.approx({"small": 2 / 62, "medium": 10 / 62, "large": 50 / 62})
    assert dataset_probabilities(SIZES, 1.0) == pytest.approx({name: 1 / 3 for name in SIZES})
    assert dataset_probabilities(SIZES, 0.0) == pytest.approx({name: n / 2604 for name, n in SIZES.items()})
    with pytest.raises(ValueError, match="positive number of cases"):
        dataset_probabilities({"empty": 0})


def test_drawn_case_frequencies_are_inversely_proportional_to_the_square_root_of_the_size():
    sampler = MultiDatasetSampler(SIZES, seed=3)
    draws = [sampler.draw(index) for index in range(20000)]
    counts = {name: sum(1 for drawn, _ in draws if drawn == name) for name in SIZES}
    expected = dataset_probabilities(SIZES)
    for name, n in SIZES.items():
        p = expected[name]
        assert abs(counts[name] - 20000 * p) < 5 * np.sqrt(20000 * p * (1 - p)), (name, counts)
    per_case = {name: counts[name] / n for name, n in SIZES.items()}  # draws per case ∝ 1/√N
    assert per_case["small"] / per_case["large"] == pytest.approx(np.sqrt(2500 / 4), rel=0.15)
    assert per_case["medium"] / per_case["large"] == pytest.approx(np.sqrt(2500 / 100), rel=0.1)
    small_cases = np.bincount([case for name, case in draws if name == "small"], minlength=4)
    assert small_cases.min() > 0.8 * small_cases.mean() and all(case < n for name, case in draws
                                                                for n in [SIZES[name]])


def test_draws_are_a_pure_function_of_seed_rank_and_index():
    first, again = MultiDatasetSampler(SIZES, seed=1), MultiDatasetSampler(SIZES, seed=1)
    order = list(range(500))
    assert [first.draw(i) for i in order] == [again.draw(i) for i in reversed(order)][::-1]
    other_rank = MultiDatasetSampler(SIZES, seed=1, rank=1)
    assert [first.draw(i) for i in order] != [other_rank.draw(i) for i in order]
    with pytest.raises(IndexError):
        first.draw(-1)


class RecordNoise(Randomizable):
    def randomize(self, data=None):
        self.value = self.R.random()

    def __call__(self, data):
        self.randomize()
        return {**data, "noise": self.value}


def test_dataset_gives_the_same_sample_for_an_index_whatever_came_before():
    datasets = {name: {"in_channels": 1 + (name == "medium"),
                       "training": [{"image": f"{name}_{i}.nii.gz", "label": f"{name}_{i}_seg.nii.gz"}
                                    for i in range(n)]} for name, n in SIZES.items()}
    dataset = MultiDatasetSampleDataset(datasets, RecordNoise(), samples_per_epoch=8, seed=5)
    forward = [dataset[i] for i in range(40)]
    resumed = MultiDatasetSampleDataset(datasets, RecordNoise(), samples_per_epoch=8, seed=5)
    assert [resumed[i] for i in range(39, 19, -1)] == forward[20:][::-1]
    assert len(dataset) == 8 and len({sample["noise"] for sample in forward}) == 40
    for sample in forward:
        assert sample["image"].startswith(sample["dataset"]) and sample["in_channels"] == datasets[sample["dataset"]][
            "in_channels"]
