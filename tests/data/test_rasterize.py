from __future__ import annotations

import numpy as np

from shared.data.rasterize import rasterize_instances


def test_instances_become_class_plus_one(rng):
    instance_map = rng.integers(0, 4, size=(5, 6, 7))
    target = rasterize_instances(instance_map, np.array([1, 2, 3]), np.array([0, 4, 1]))
    np.testing.assert_array_equal(target, np.array([0, 1, 5, 2])[instance_map])
    assert not rasterize_instances(instance_map, np.zeros(0), np.zeros(0)).any()
