"""The npe2 writers: an image layer as float32 GeoTIFF, a mask as uint8 GeoTIFF, georeferencing kept."""
from __future__ import annotations

import numpy as np

from ._napari import scene_of
from .errors import SceneError
from .scene import write_bands, write_scene


def write_image(path: str, data, meta: dict) -> list[str]:
    """Save an image layer (a scene, a fill, a variance) as float32 GeoTIFF, georeferencing kept; never over
    any file the layer's scene was read from (every band file of a Landsat folder too). A stack of dates
    (date × band × y × x) is refused: one GeoTIFF holds bands × rows × columns, and would be unreadable."""
    if np.ndim(data) - bool(meta.get("rgb")) > 3:
        raise SceneError(f"{path}: a layer of shape {tuple(np.shape(data))} (a stack of dates) cannot be one GeoTIFF "
                         "of bands × rows × columns; save single scenes")
    scene = scene_of(data, meta)
    protect = [scene.path] if scene.path else []
    write_scene(scene, path, protect=tuple(protect))
    return [path]


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Save a mask (Labels layer, nonzero = fill) as a uint8 GeoTIFF (1 = fill) with the georeferencing of
    the layer's scene, so masks round-trip."""
    mask = (np.asarray(data) != 0).astype(np.uint8)
    scene = scene_of(np.zeros(mask.shape, np.float32), meta)
    names = scene.band_names if mask.ndim == 3 else [f"{scene.name} mask"]
    write_bands(path, mask, like=scene, names=names, keep_roles=(), protect=(scene.path,) if scene.path else ())
    return [path]
