import numpy as np

from shared.data.synthetic.fields import Grid, SmoothField


def test_grid_affine_maps_indices_to_axes():
    grid = Grid.centred((5, 6, 7), (0.5, 1.0, 2.0), (10.0, -3.0, 4.0))
    x, y, z = grid.axes()
    index = np.array([4, 2, 6])
    world = grid.affine @ np.array([*index, 1.0])
    np.testing.assert_allclose(world[:3], [x[4, 0, 0], y[0, 2, 0], z[0, 0, 6]], atol=1e-5)
    np.testing.assert_allclose(world[:3].mean() * 0 + grid.to_index(world[None, :3])[0], index, atol=1e-6)
    np.testing.assert_allclose((grid.affine @ [2, 2.5, 3, 1])[:3], [10, -3, 4], atol=1e-9)


def test_field_on_grid_equals_field_at_points(rng):
    grid = Grid.centred((9, 8, 7), (3.0, 3.0, 4.0), (0, 0, 0))
    field = SmoothField(rng, (-20, -20, -20), (20, 20, 20), cell_mm=7.0)
    x, y, z = np.meshgrid(*[a.ravel() for a in grid.axes()], indexing="ij")
    points = np.stack([x.ravel(), y.ravel(), z.ravel()], 1)
    np.testing.assert_allclose(field.on_grid(grid).ravel(), field.at_points(points), atol=1e-4)
    assert 0.3 < field.on_grid(grid).std() < 2.0
