"""npe2 reader, writers and sample data: thin glue between napari layers and `scene.py`."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .scene import BAND_FILE, TIFF_SUFFIXES, Scene, SceneError, read_scene, write_bands, write_scene

# The shipped sample scenes live in the top-level sample_data/ folder (an editable install finds
# them there); a wheel may carry them inside the package.
SAMPLE_DIRS = (Path(__file__).parent / "sample_data", Path(__file__).parent.parent / "sample_data")
COMPOSITES = {
    "as stored (1-2-3)": None,
    "natural colour (3-2-1)": (3, 2, 1),
    "false colour (4-3-2)": (4, 3, 2),
    "SWIR (5-4-3)": (5, 4, 3),
}
SCENE_KEY = "napari_convnp_scene"  # layer.metadata key holding the Scene (georeferencing, band names)


# --- layers of a scene -----------------------------------------------------------------------------

def band_index(scene: Scene, number: int) -> int | None:
    """Index of Landsat band `number`, from band names such as 'B4', 'SR_B4', 'ETM+ B4 NIR'."""
    for i, name in enumerate(scene.band_names):
        match = re.search(r"B(\d+)(?!\d)", name)
        if match and int(match.group(1)) == number:
            return i
    if not any(re.search(r"B\d", n) for n in scene.band_names) and number <= len(scene.band_names):
        return number - 1  # unnamed bands: assume Landsat 7 order
    return None


def composite_bands(scene: Scene, choice: str) -> tuple[int, int, int] | None:
    """Band indices for an RGB composite, or None when the scene lacks them."""
    numbers = COMPOSITES.get(choice)
    if numbers is None:
        return (0, 1, 2) if len(scene.band_names) >= 3 else None
    idx = [band_index(scene, n) for n in numbers]
    return None if None in idx else tuple(idx)


def default_composite(scene: Scene) -> str | None:
    if len(scene.band_names) < 3:
        return None
    if len(scene.band_names) == 3:
        return "as stored (1-2-3)"
    for choice in ("natural colour (3-2-1)", "as stored (1-2-3)"):
        if composite_bands(scene, choice):
            return choice
    return None


def stretch(band: np.ndarray, low: float = 2, high: float = 98) -> np.ndarray:
    """Percentile contrast stretch to [0, 1]; NaN (no data) becomes 0."""
    finite = band[np.isfinite(band)]
    if finite.size == 0:
        return np.zeros(band.shape, np.float32)
    lo, hi = np.percentile(finite, [low, high])
    out = (band - lo) / (hi - lo if hi > lo else 1.0)
    return np.nan_to_num(np.clip(out, 0, 1)).astype(np.float32)


def rgb_composite(scene: Scene, choice: str) -> np.ndarray | None:
    idx = composite_bands(scene, choice)
    if idx is None:
        return None
    return np.stack([stretch(scene.bands[i]) for i in idx], -1)


def contrast_limits(bands: np.ndarray) -> tuple[float, float]:
    finite = bands[np.isfinite(bands)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def scene_layers(scene: Scene) -> list[tuple]:
    """The bands as one multichannel image layer (a slider over bands), plus an RGB composite."""
    layers = []
    choice = default_composite(scene)
    if choice:
        layers.append((rgb_composite(scene, choice), {"name": f"{scene.name} RGB {choice}", "rgb": True,
                                                       "metadata": {SCENE_KEY: scene, "composite": choice}},
                       "image"))
    layers.append((scene.bands, {"name": scene.name, "contrast_limits": contrast_limits(scene.bands),
                                 "colormap": "gray", "visible": not layers,
                                 "metadata": {SCENE_KEY: scene}, "axis_labels": ("band", "y", "x")}, "image"))
    return layers


# --- npe2 contributions ----------------------------------------------------------------------------

def get_reader(path):
    """Reader for GeoTIFF files and Landsat product folders; None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        if not any(BAND_FILE.search(f.name) for f in p.iterdir()):
            return None
    elif p.suffix.lower() not in TIFF_SUFFIXES:
        return None
    return read_layers


def read_layers(path) -> list[tuple]:
    if isinstance(path, list):
        path = path[0]
    return scene_layers(read_scene(path))  # a SceneError names the file; napari shows it as a notification


def scene_of(data: np.ndarray, meta: dict) -> Scene:
    """The Scene (with georeferencing) behind a layer, or a plain one for layers from elsewhere."""
    source = (meta.get("metadata") or {}).get(SCENE_KEY)
    bands = np.asarray(data, dtype=np.float32)
    if bands.ndim == 3 and meta.get("rgb"):
        bands = np.moveaxis(bands, -1, 0)
    if bands.ndim == 2:
        bands = bands[None]
    if source is not None and source.shape[1:] == bands.shape[1:]:
        names = source.band_names if len(source.band_names) == len(bands) else None
        return source.with_bands(bands, names or [f"band {i + 1}" for i in range(len(bands))])
    return Scene(bands, [f"band {i + 1}" for i in range(len(bands))], np.isnan(bands))


def write_image(path: str, data, meta: dict) -> list[str]:
    """Save an image layer (a scene, a fill, a variance) as float32 GeoTIFF, georeferencing kept; never over
    any file the layer's scene was read from (every band file of a Landsat folder too)."""
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


def _sample(filename: str):
    def load():
        for folder in SAMPLE_DIRS:
            if (folder / filename).exists():
                return scene_layers(read_scene(folder / filename))
        raise SceneError(f"{filename}: sample file missing from the installation")

    return load


sample_sf_bay = _sample("sf_bay_landsat7_768.tif")
sample_itaipu = _sample("itaipu_landsat8_B234_768.tif")
sample_slc_off = _sample("LE07_L2SP_225078_20110306_slc_off_B1.tif")
