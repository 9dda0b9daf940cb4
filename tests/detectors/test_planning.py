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
    both = {"detector": {"anchor_sizes": sizes}, "anchor_sizes": [[1.0]] * 3}
    assert planned_detector(both) == {"anchor_sizes": sizes}
    assert planned_detector({"anchor_sizes": sizes}) == {"anchor_sizes": sizes}  # plans written before "detector"
    assert planned_detector({"detector": {}}) == {}


def test_only_a_detector_that_plans_from_boxes_refuses_data_without_any(tmp_path, rng):
    from shared.data.plan import plan_dataset
    from shared.data.transforms_chains import preprocessing_chain
    from shared.engines.detection_setup import prepare_detection_data, read_model_plan
    from shared.io.errors import InputError
    from tests._cases import write_dataset

    datalist = write_dataset(tmp_path / "raw", rng=rng, training=2, validation=1, objects=0)
    plan = plan_dataset(datalist, tmp_path / "cache", spacing=[2.0, 2.0, 2.0])
    common = dict(preprocessing=preprocessing_chain(plan), plan=plan, in_channels=1, num_classes=2,
                  patch_size=[16, 16, 16], detection_strides=[4, 8])
    with pytest.raises(InputError, match=r"datalist.json: the training split has no boxes: the Retina U-Net"):
        prepare_detection_data(datalist, tmp_path / "cache", tmp_path / "retina", plan_detector=plan_retina_unet,
                               **common)
    assert not (tmp_path / "retina" / "model_plan.json").exists()
    # a detector without a planning function (a heat-map or query detector) trains on the same data
    prepare_detection_data(datalist, tmp_path / "cache", tmp_path / "other", plan_detector=None, **common)
    assert planned_detector(read_model_plan(tmp_path / "other")) == {}
