"""landsat: band numbers and the sensor rule, one of each for the reader, the reference alignment and napari."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_convnp import landsat
from napari_convnp.scene import Scene


def scene(names, path=None):
    n = len(names)
    return Scene(np.zeros((n, 2, 2), np.float32), names, np.zeros((n, 2, 2), bool), path=Path(path) if path else None)


@pytest.mark.parametrize("name, number", [("B4", (4, None)), ("SR_B4", (4, None)), ("ETM+ B3 red", (3, None)),
                                          ("b5_swir1", (5, None)), ("B6_VCID_2", (6, "2")), ("ST_B10", (10, None)),
                                          ("band 1", None), ("AB4", None), ("B123", None)])
def test_band_number_in_a_band_name(name, number):
    assert landsat.band_number(name) == number


def test_a_band_file_names_its_band_with_the_same_spelling():
    assert landsat.BAND_FILE.search("LE07_L2SP_x_B6_VCID_1.TIF").group(1) == "B6_VCID_1"
    names = ["B10", "B6_VCID_2", "B2", "B6_VCID_1"]
    assert sorted(names, key=landsat.band_file_order) == ["B2", "B6_VCID_1", "B6_VCID_2", "B10"]


def test_a_thermal_band_10_or_11_means_oli_whatever_its_prefix():
    assert landsat.sensor_family(scene(["ST_B10"])) == "oli"
    assert landsat.sensor_family(scene(["SR_B6"])) == "oli"  # ETM+/TM band 6 is the thermal ST_B6
    assert landsat.sensor_family(scene(["ST_B6"])) == "tm"


def test_oli_bands_match_tm_bands_seeing_the_same_light():
    oli = landsat.tm_band_keys(scene(["SR_B2", "SR_B5", "SR_B1"], "LC08_x.tif"))
    tm = landsat.tm_band_keys(scene(["B1", "B4"], "LE07_x.tif"))
    assert oli[:2] == tm and oli[2] == ("oli", 1, None)  # OLI's coastal band has no TM twin
