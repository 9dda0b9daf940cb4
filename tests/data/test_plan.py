import pytest

from shared.data.plan import class_names, make_plan, parse_spacing, plan_dataset, spacing_request_matches
from tests._cases import write_dataset
from shared.io.errors import InputError

FINGERPRINT = {"median_spacing": [0.7, 0.7, 1.25], "channels": [{"modality": "CT", "clip": [-1, 1], "mean": 0, "std": 1}]}


def test_parse_spacing():
    assert parse_spacing("fixed") == ("fixed", [1.0, 1.0, 1.0])
    assert parse_spacing("median") == ("median", None)
    assert parse_spacing("1,1,2.5") == ("custom", [1.0, 1.0, 2.5])
    assert parse_spacing((2, 2, 2)) == ("custom", [2.0, 2.0, 2.0])
    for bad in ("1,2", "a,b,c", (1, 0, 1), "wide"):
        with pytest.raises(InputError):
            parse_spacing(bad)


def test_plan_records_the_request_and_the_package_version(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("{}")
    datalist = {"training": [{"label": [0, 3]}]}
    assert class_names(datalist) == ["0", "1", "2", "3"]
    median = make_plan(FINGERPRINT, datalist, path, spacing="median")
    fixed = make_plan(FINGERPRINT, datalist, path, spacing="fixed")
    assert median["target_spacing"] == [0.7, 0.7, 1.25] and median["num_classes"] == 4
    assert "version" not in median and "hash" not in median and median["package_version"]
    assert spacing_request_matches(median, "median") and not spacing_request_matches(median, "fixed")
    assert spacing_request_matches(fixed, "1,1,1") is False  # fixed and custom are different requests


def test_plan_dataset_reuses_a_current_plan_and_redoes_a_changed_request(tmp_path, rng):
    path = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1)
    plan = plan_dataset(path, tmp_path / "plan")
    written = (tmp_path / "plan" / "plans.json").stat().st_mtime_ns
    assert plan_dataset(path, tmp_path / "plan") == plan
    assert (tmp_path / "plan" / "plans.json").stat().st_mtime_ns == written
    assert plan_dataset(path, tmp_path / "plan", spacing=[2, 2, 2])["target_spacing"] == [2.0, 2.0, 2.0]
