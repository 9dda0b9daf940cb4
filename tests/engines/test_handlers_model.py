import json
from types import SimpleNamespace

from torch import nn

from shared.engines.handlers_model import BEST_RECORD, ModelSaver


def _reject_constant(name):
    raise ValueError(f"not strict JSON: {name}")


def test_best_record_is_strict_json_when_a_class_has_no_validation_object(tmp_path):
    saver = ModelSaver(tmp_path, nn.Linear(2, 1), key_metric="AP")
    validator = SimpleNamespace(state=SimpleNamespace(metrics={"AP": 0.5, "benign/AP": float("nan")}, epoch=1,
                                                      key_metric_name="AP"))
    saver.validated(validator)
    record = json.loads((tmp_path / BEST_RECORD).read_text(), parse_constant=_reject_constant)
    assert record["value"] == 0.5 and record["metrics"] == {"AP": 0.5, "benign/AP": None}
    assert (tmp_path / "model.pt").exists()
