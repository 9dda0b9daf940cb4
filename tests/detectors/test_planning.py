import numpy as np
import pytest

from shared.detectors.anchor_fitting import fit_anchor_sizes
from shared.detectors.planning import plan_retina_unet, planned_detector


def test_retina_unet_plan_is_the_fitted_anchor_sizes():
    rng = np.random.default_rng(0)
    starts = rng.uniform(0, 40, size=(30, 3))
    boxes = np.concatenate([starts, starts + rng.uniform(3, 12, size=(30, 3))], axis=1)
    plan = plan_retina_unet(boxes, [4, 8])
    assert plan == {"anchor_sizes": fit_anchor_sizes(boxes, [4, 8])}
    assert len(plan["anchor_sizes"]) == 3 and all(len(axis) == 3 for axis in plan["anchor_sizes"])


def test_retina_unet_refuses_data_without_boxes():
    with pytest.raises(ValueError, match="no boxes: the Retina U-Net fits its anchor sizes"):
        plan_retina_unet(np.zeros((0, 6), dtype=np.float32), [4, 8])


def test_planned_detector_reads_new_and_old_model_plans():
    sizes = [[4.0], [6.0], [8.0]]
    assert planned_detector({"detector": {"anchor_sizes": sizes}, "anchor_sizes": [[1.0]] * 3}) == {"anchor_sizes": sizes}
    assert planned_detector({"anchor_sizes": sizes}) == {"anchor_sizes": sizes}  # plans written before "detector"
    assert planned_detector({"detector": {}}) == {}
