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


def test_deformable_detr_plan_counts_objects_per_patch_from_the_boxes_per_case():
    from shared.detectors.deformable_detr import objects_per_patch, plan_queries
    from shared.detectors.planning import plan_deformable_detr

    near = np.array([[0, 0, 0, 4, 4, 4], [10, 0, 0, 14, 4, 4], [0, 10, 0, 4, 14, 4]], dtype=np.float32)
    far = near * 10  # the same three boxes 10 times as far apart: one per 32³ patch
    cases = [near] * 5 + [far] * 5 + [np.zeros((0, 6), dtype=np.float32)]
    plan = plan_deformable_detr(np.concatenate(cases), [4, 8], case_boxes=cases, patch_size=[32, 32, 32], minimum=1)
    # 15 boxes see 3 objects, 15 see 1, the empty case one patch with 0: p95 = 3, so 3 × 3 queries
    assert plan == {"num_queries": 9} == plan_queries(objects_per_patch(cases, [32, 32, 32]), minimum=1)
    assert plan_deformable_detr(np.zeros((0, 6)), [4], case_boxes=[], patch_size=[32] * 3) == {"num_queries": 16}


def test_the_planning_hook_gets_the_boxes_per_case_and_the_patch(tmp_path, rng):
    from shared.data.plan import plan_dataset
    from shared.data.transforms_chains import preprocessing_chain
    from shared.engines.detection_setup import prepare_detection_data, read_model_plan
    from tests._cases import write_dataset

    datalist = write_dataset(tmp_path / "raw", rng=rng, training=3, validation=1, objects=2)
    plan = plan_dataset(datalist, tmp_path / "cache", spacing=[2.0, 2.0, 2.0])
    seen = {}

    def hook(training_boxes, detection_strides, *, case_boxes, patch_size):
        seen.update(pooled=training_boxes, cases=case_boxes, patch_size=patch_size, strides=detection_strides)
        return {"num_queries": len(case_boxes)}

    data = prepare_detection_data(datalist, tmp_path / "cache", tmp_path / "out",
                                  preprocessing=preprocessing_chain(plan), plan=plan, in_channels=1, num_classes=2,
                                  patch_size=[16, 16, 16], detection_strides=[4, 8], plan_detector=hook)
    assert len(seen["cases"]) == 3 and all(boxes.shape == (2, 6) for boxes in seen["cases"])
    np.testing.assert_array_equal(seen["pooled"], np.concatenate(seen["cases"]))
    assert seen["patch_size"] == [16, 16, 16] and seen["strides"] == [4, 8]
    assert data.detector == read_model_plan(tmp_path / "out")["detector"] == {"num_queries": 3}
    # Retina U-Net's hook takes the same call and plans from the pooled boxes as before
    retina = prepare_detection_data(datalist, tmp_path / "cache", tmp_path / "retina",
                                    preprocessing=preprocessing_chain(plan), plan=plan, in_channels=1, num_classes=2,
                                    patch_size=[16, 16, 16], detection_strides=[4, 8], plan_detector=plan_retina_unet)
    assert retina.anchor_sizes == fit_anchor_sizes(seen["pooled"], [4, 8])


def test_record_network_adds_the_spec_of_a_network_built_after_the_plan(tmp_path):
    from shared.bundles import build_network
    from shared.engines.detection_setup import read_model_plan, record_network

    (tmp_path / "model_plan.json").write_text('{"patch_size": [32, 32, 32], "detector": {"num_queries": 5}}')
    network = build_network("shared.networks.deformable_detr.DeformableDETRNetwork", in_channels=1, num_classes=2,
                            encoder={"name": "plain", "preset": "tiny"}, num_queries=5, num_levels=2,
                            hidden_channels=32, num_heads=2, num_points=1, encoder_layers=1, decoder_layers=1,
                            feedforward_channels=32)
    assert record_network(tmp_path, network) is network
    recorded = read_model_plan(tmp_path)
    assert recorded["patch_size"] == [32, 32, 32] and recorded["detector"] == {"num_queries": 5}
    assert recorded["network"]["arguments"]["num_queries"] == 5
    rebuilt = build_network("shared.networks.deformable_detr.DeformableDETRNetwork", plan=tmp_path, in_channels=1,
                            num_classes=2, encoder={"name": "plain", "preset": "paper"}, num_queries=100)
    assert rebuilt.num_queries == 5 and rebuilt.hidden_channels == 32


ANISOTROPIC = {"name": "plain", "preset": "small", "strides": [1, 2, 2, [2, 2, 1], 2]}


@pytest.mark.parametrize("encoder, num_levels", [({"name": "plain", "preset": "paper"}, 4),
                                                 ({"name": "resenc", "preset": "tiny"}, 2), (ANISOTROPIC, 3)])
def test_level_strides_are_the_networks_detection_strides(encoder, num_levels):
    import torch

    from shared.detectors.deformable_detr import level_strides
    from shared.networks.deformable_detr import DeformableDETRNetwork

    with torch.device("meta"):
        network = DeformableDETRNetwork(1, 2, encoder=encoder, num_levels=num_levels)
    expected = [stride if isinstance(stride, int) else list(stride) for stride in network.detection_strides]
    assert level_strides(encoder, num_levels) == expected
    with pytest.raises(ValueError, match="num_levels must be"):
        level_strides(encoder, 99)
