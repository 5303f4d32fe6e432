"""npe2 reader, writers and sample data: thin glue between napari layers and `scene.py`."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from .errors import SceneError
from .georef import GEO_TAGS
from .landsat import BAND_FILE, PRODUCT_NAME, band_numbers, composites  # noqa: F401 - band_numbers: as before
from .landsat import sensor_family as sensor  # noqa: F401 - the package's one sensor rule (also for composites)
from .maskfile import is_mask_file, read_mask, rule_for_name
from .scene import Scene, read_scene
from .tiffread import GDAL_METADATA, GDAL_NODATA, TIFF_SUFFIXES, TiffPixels
from .tiffwrite import write_bands, write_scene

# The shipped sample scenes live inside the package, so a wheel and `pip install .` carry them.
SAMPLE_DIR = Path(__file__).parent / "sample_data"
SCENE_KEY = "napari_convnp_scene"  # layer.metadata key holding the Scene (georeferencing, band names)
COMPOSITE_KEY = "composite"  # layer.metadata key of an RGB composite made by this plugin
PLUGIN = "napari-convnp"
READER_PATTERNS = ("*.tif", "*.tiff", "*.TIF", "*.TIFF")  # as in napari.yaml

# --- band numbering and RGB composites ---------------------------------------------------------------

def default_composite(scene: Scene) -> str | None:
    return next(iter(composites(scene)), None)


def composite_name(scene_name: str, choice: str) -> str:
    """'<scene> RGB 3-2-1': the band numbers at the end, where the layer list keeps them visible."""
    numbers = re.search(r"\(([^)]*)\)", choice)
    return f"{scene_name} RGB {numbers.group(1).replace('bands ', '') if numbers else choice}"


DISPLAY_SAMPLE = 2 ** 22  # values: display percentiles of a larger array come from an even subsample of it


def display_step(size: int) -> int:
    """k: every k-th row and column of an array of `size` values is an even subsample of about DISPLAY_SAMPLE."""
    return max(1, math.isqrt(size // DISPLAY_SAMPLE))


def display_percentiles(values: np.ndarray, q) -> np.ndarray | None:
    """Percentiles of the finite values, for display: from every k-th row and column of an array with more
    than DISPLAY_SAMPLE values (exact ones of a whole scene take seconds and a copy of it); None if none."""
    step = display_step(values.size)
    sample = values[..., ::step, ::step]
    finite = sample[np.isfinite(sample)]
    return np.percentile(finite, q) if finite.size else None


def stretch(band: np.ndarray, low: float = 2, high: float = 98) -> np.ndarray:
    """Percentile contrast stretch to 0…255 (uint8: a composite is for the eye); NaN (no data) becomes 0."""
    limits = display_percentiles(band, [low, high])
    if limits is None:
        return np.zeros(band.shape, np.uint8)
    lo, hi = limits
    with np.errstate(invalid="ignore"):
        out = np.clip((band - lo) * (255 / (hi - lo if hi > lo else 1.0)), 0, 255)
    return np.nan_to_num(out, copy=False).astype(np.uint8)


def rgb_composite(scene: Scene, choice: str) -> np.ndarray | None:
    idx = composites(scene).get(choice)
    if idx is None:
        return None
    return np.stack([stretch(scene.bands[i]) for i in idx], -1)


def contrast_limits(bands: np.ndarray) -> tuple[float, float]:
    limits = display_percentiles(bands, [1, 99])
    if limits is None:
        return 0.0, 1.0
    lo, hi = limits
    return float(lo), float(hi if hi > lo else lo + 1)


# --- georeferencing → napari's scale and translate ---------------------------------------------------

def georeference(scene: Scene) -> dict | None:
    """napari placement of a north-up scene from its GeoTIFF tags, or None (no or rotated georeferencing).

    napari's y axis points down, so the world coordinates are (−northing, easting) of the pixel centres,
    in map units: `scale` is the pixel size (y, x), both positive, and `translate` the map position of
    the first pixel's centre with the northing negated. Scenes of the same map projection then line up
    and the scale bar measures metres (or degrees for a geographic CRS).
    """
    grid = scene.grid
    if grid is None or grid.rotated:
        return None  # rotated or sheared: napari would need an affine; left in pixels
    x0, sx, _, y0, _, dy = grid.transform  # the first pixel's corner
    sy = -dy
    if not (sx > 0 and sy > 0):
        return None
    placement = {"scale": (sy, sx), "translate": (-(y0 - sy / 2), x0 + sx / 2)}  # its centre, northing negated
    if grid.units:
        placement["units"] = (grid.units, grid.units)
    return placement


def fit_placement(placement: dict | None, ndim: int) -> dict:
    """A 2-D placement (scale, translate, units of y and x) for a layer of `ndim` dimensions."""
    if not placement:
        return {}
    lead = ndim - 2
    out = {"scale": (1.0,) * lead + tuple(placement["scale"]),
           "translate": (0.0,) * lead + tuple(placement["translate"])}
    if placement.get("units"):
        out["units"] = ("pixel",) * lead + tuple(placement["units"])
    return out


def layer_placement(layer) -> dict | None:
    """The 2-D placement of an existing layer (its last two axes), to put results exactly over it."""
    placement = {"scale": tuple(float(s) for s in layer.scale[-2:]),
                 "translate": tuple(float(t) for t in layer.translate[-2:])}
    units = getattr(layer, "units", None)
    if units is not None:
        placement["units"] = tuple(str(u) for u in units[-2:])
    return placement


def scene_layers(scene: Scene) -> list[tuple]:
    """The bands as one multichannel image layer (a slider over bands), plus an RGB composite, placed
    on the map by the scene's georeferencing."""
    layers = []
    placement = georeference(scene)
    choice = default_composite(scene)
    if choice:
        layers.append((rgb_composite(scene, choice),
                       {"name": composite_name(scene.name, choice), "rgb": True,
                        "metadata": {SCENE_KEY: scene, COMPOSITE_KEY: choice}, **fit_placement(placement, 2)},
                       "image"))
    layers.append((scene.bands, {"name": scene.name, "contrast_limits": contrast_limits(scene.bands),
                                 "colormap": "gray", "visible": not layers,
                                 "metadata": {SCENE_KEY: scene}, "axis_labels": ("band", "y", "x"),
                                 **fit_placement(placement, 3)}, "image"))
    return layers


# --- npe2 contributions ----------------------------------------------------------------------------

GEOTIFF_TAGS = (*GEO_TAGS, GDAL_METADATA, GDAL_NODATA)  # georeferencing, GDAL metadata, GDAL nodata


def understands(path) -> bool:
    """Whether this plugin should claim a TIFF: it is a GeoTIFF (georeferencing or GDAL tags), is named
    like a Landsat product, or cannot be parsed at all (then the reader's error names the problem). A
    plain TIFF (a micrograph, a photo) is left to other readers."""
    p = Path(path)
    if PRODUCT_NAME.match(p.name) or BAND_FILE.search(p.name) or is_mask_file(p):
        return True
    try:
        import tifffile

        with tifffile.TiffFile(p) as tif:
            tags = tif.pages[0].tags
            return any(code in tags for code in GEOTIFF_TAGS)
    except Exception:  # noqa: BLE001 - unreadable: let read_scene say why, in one line
        return True


def get_reader(path):
    """Reader for GeoTIFF files and Landsat product folders; None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        try:
            if not any(BAND_FILE.search(f.name) for f in p.iterdir()):
                return None
        except OSError:
            return None
    elif p.suffix.lower() not in TIFF_SUFFIXES or not understands(p):
        return None
    return read_layers


def read_layers(path) -> list[tuple]:
    if isinstance(path, list):
        path = path[0]
    if is_mask_file(path):
        return mask_layers(path)
    return scene_layers(read_scene(path))  # a SceneError names the file; napari shows it as a notification


def mask_layers(path) -> list[tuple]:
    """A mask or quality file as a Labels layer, 1 = fill, by the rule its name announces (a USGS gap mask's 0, a
    QA_PIXEL/BQA/Fmask band's clouds and shadows, else nonzero), placed on the map like a scene; the widget's
    Mask picker lists it."""
    mask, mask_scene = read_mask(path, **rule_for_name(Path(path).name))
    data = mask[0] if len(mask) == 1 else mask
    return [(data.astype(np.uint8), {"name": mask_scene.name, "metadata": {SCENE_KEY: mask_scene},
                                     **fit_placement(georeference(mask_scene), data.ndim)}, "labels")]


def preferred_reader_patterns() -> list[str]:
    """The file patterns napari currently opens with this plugin without asking."""
    from napari.settings import get_settings

    prefs = get_settings().plugins.extension2reader
    return [p for p in READER_PATTERNS if prefs.get(p) == PLUGIN]


def prefer_this_reader(on: bool = True) -> None:
    """Make this plugin napari's reader for .tif/.tiff files (drag and drop, File › Open) without the
    'choose a reader' dialog, or undo that. It is napari's own per-pattern preference (Preferences ›
    Plugins › File extension readers); TIFFs this plugin does not understand then fall back to the dialog."""
    from napari.settings import get_settings

    settings = get_settings().plugins
    prefs = dict(settings.extension2reader)
    for pattern in READER_PATTERNS:
        if on:
            prefs[pattern] = PLUGIN
        elif prefs.get(pattern) == PLUGIN:
            del prefs[pattern]
    settings.extension2reader = prefs


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


def lazy_image(path):  # -> dask.array.Array
    """A GeoTIFF as a dask array that napari reads window by window as it shows it (the band on screen, a row
    of blocks at a time), instead of a copy of the whole in memory."""
    import dask.array as da

    pixels = TiffPixels.open(path)
    _, h, w = pixels.shape
    return da.from_array(pixels, chunks=(1, min(h, 1024), w), asarray=True, fancy=False, lock=False,
                         name=f"napari-convnp-{Path(path).name}")


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
        path = SAMPLE_DIR / filename
        if not path.exists():
            raise SceneError(f"{path}: sample file missing from the installation; reinstall napari-convnp")
        return scene_layers(read_scene(path))

    return load


sample_sf_bay = _sample("sf_bay_landsat7_768.tif")
sample_itaipu = _sample("itaipu_landsat8_B234_768.tif")
sample_slc_off = _sample("LE07_L2SP_225078_20110306_slc_off_B1.tif")
