import json

import numpy as np
import pytest

from shared.data.synthetic.dataset import TASKS, make_case
from shared.data.synthetic.multitalent import DATASETS
from shared.io.errors import InputError
from shared.io.images import load_label_map, load_volume
from shared.io.multi_datalist import read_multi_datalist, tasks_of
from tools.make_multitalent_dataset import main as make_multitalent_cli

SHAPE = (32, 32, 24)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    out = tmp_path_factory.mktemp("multitalent")
    return out, make_multitalent_cli(str(out), seed=0, num_training=2, num_validation=1, shape=SHAPE)


def test_three_data_sets_with_their_own_labels_and_channels(collection):
    out, path = collection
    data = read_multi_datalist(path, check_files=True)
    assert tasks_of(data) == [
        {"name": "lung_ct", "in_channels": 1, "classes": ["lungs", "vessels", "nodules"], "kind": "softmax"},
        {"name": "brain_mri", "in_channels": 2, "classes": ["CSF", "grey matter", "white matter", "lesions"],
         "kind": "softmax"},
        {"name": "chest_ct", "in_channels": 1, "classes": ["heart and great vessels", "bone"], "kind": "softmax"},
    ]
    raw = json.loads(open(path).read())
    assert raw["datasets"]["brain_mri"]["training"][0]["image"] == [
        "brain_mri/imagesTr/brain_mri_tr_000_0000.nii.gz", "brain_mri/imagesTr/brain_mri_tr_000_0001.nii.gz"]
    for name, spec in data["datasets"].items():
        assert len(spec["training"]) == 2 and len(spec["validation"]) == 1
        source = DATASETS[name]
        for split, entries in (("training", spec["training"]), ("validation", spec["validation"])):
            for index, entry in enumerate(entries):
                case = make_case(source.task, split, index, seed=source.seed_offset, shape=SHAPE)
                volume = load_volume(entry["image"])
                labels = load_label_map(entry["label"], like=volume)
                np.testing.assert_array_equal(volume.array, case.image)
                np.testing.assert_array_equal(labels, case.segmentations[source.label_set])
                assert labels.max() <= len(spec["classes"])


def test_label_maps_follow_the_anatomy():
    lung = make_case("lung_ct", "training", 0, seed=1000)
    labels = lung.segmentations["lung"]
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(labels == 3, lung.instances > 0)
    hu = lung.image[0]
    assert np.median(hu[labels == 1]) < -600 < np.median(hu[labels == 2])  # parenchyma dark, vessels blood-bright
    chest = lung.segmentations["chest"]
    assert np.median(hu[chest == 2]) > 150 and -50 < np.median(hu[chest == 1]) < 150
    brain = make_case("brain_mri", "training", 0, seed=2000)
    tissue = brain.segmentations["brain"]
    assert set(np.unique(tissue)) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(tissue == 4, brain.instances > 0)
    t1 = brain.image[0].astype(float)
    assert np.median(t1[tissue == 1]) < np.median(t1[tissue == 2]) < np.median(t1[tissue == 3])
    assert TASKS["brain_mri"].label_sets["brain"][3] == "lesions"


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(InputError, match="datasets must be among"):
        make_multitalent_cli(str(tmp_path / "x"), datasets=("liver",), num_training=1, shape=SHAPE)
    with pytest.raises(InputError, match="--shape"):
        make_multitalent_cli(str(tmp_path / "y"), shape=(4, 4, 4))
