"""georef.Grid: the one parser of a GeoTIFF's georeferencing."""
from __future__ import annotations

import numpy as np
import pytest

from napari_convnp.georef import Grid
from napari_convnp.scene import Scene

from .conftest import UTM33N


def tags(x0=500000.0, y0=4000000.0, pixel=30.0, keys=UTM33N):
    return {33550: (pixel, pixel, 0.0), 33922: (0.0, 0.0, 0.0, x0, y0, 0.0), 34735: keys}


def test_tie_point_and_pixel_scale_give_gdal_transform_crs_and_units():
    grid = Grid.from_tags(tags())
    assert grid.transform == (500000.0, 30.0, 0.0, 4000000.0, 0.0, -30.0)
    assert grid.crs == ("EPSG", 32633) and grid.crs_text == "EPSG:32633" and grid.units == "m"
    assert grid.pixel_size == 30.0 and not grid.rotated


def test_pixel_is_point_tie_point_is_moved_to_the_pixel_corner():
    point = (1, 1, 0, 2, 1025, 0, 1, 2, 3072, 0, 1, 32633)
    assert Grid.from_tags(tags(keys=point)).transform[::3] == (500000.0 - 15, 4000000.0 + 15)


def test_offset_between_two_grids_in_rows_and_columns():
    target, ref = Grid.from_tags(tags()), Grid.from_tags(tags(x0=500000.0 + 90, y0=4000000.0 - 60))
    assert target.offset(ref) == (2.0, 3.0)


@pytest.mark.parametrize("bad", [{}, {33550: (30.0, 30.0, 0.0)}, tags(pixel=0.0), tags(pixel=float("nan")),
                                 {33922: "text", 33550: (30.0, 30.0)}])
def test_tags_that_place_no_grid_give_none(bad):
    assert Grid.from_tags(bad) is None


def test_a_rotated_transform_is_a_rotated_grid():
    rotated = {34264: (30.0, 5.0, 0, 500000.0, 5.0, -30.0, 0, 4000000.0, 0, 0, 0, 0, 0, 0, 0, 1)}
    assert Grid.from_tags(rotated).rotated


def test_a_scene_whose_tags_are_replaced_has_the_new_grid():
    scene = Scene(np.zeros((1, 4, 4), np.float32), ["B1"], np.zeros((1, 4, 4), bool), tags())
    assert scene.pixel_size == 30.0
    scene.geo_tags = tags(pixel=60.0)
    assert scene.pixel_size == 60.0 and scene.grid == Grid.from_tags(tags(pixel=60.0))
