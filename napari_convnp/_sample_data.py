"""The npe2 sample data: the three scenes shipped inside the package."""
from __future__ import annotations

from ._napari import SAMPLE_DIR, scene_layers
from .scene import SceneError, read_scene


def _sample(filename: str):
    def load():
        path = SAMPLE_DIR / filename
        if not path.exists():
            raise SceneError(f"{path}: sample file missing from the installation; reinstall napari-convnp")
        return scene_layers(read_scene(path))

    return load


sample_sf_bay = _sample("sf_bay_landsat7_768.tif")
sample_itaipu = _sample("itaipu_landsat8_B234_768.tif")
sample_slc_off = _sample("LE07_L2SP_225078_20110306_slc_off_B1.tif")
