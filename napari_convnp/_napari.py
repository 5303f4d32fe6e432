"""npe2 reader, writers and sample data: thin glue between napari layers and `scene.py`."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from .reference import sensor_family as sensor  # the package's one sensor rule (also for composites)
from .scene import BAND_FILE, TIFF_SUFFIXES, Scene, SceneError, TiffPixels, read_scene, write_bands, write_scene

# The shipped sample scenes live inside the package, so a wheel and `pip install .` carry them.
SAMPLE_DIR = Path(__file__).parent / "sample_data"
SCENE_KEY = "napari_convnp_scene"  # layer.metadata key holding the Scene (georeferencing, band names)
COMPOSITE_KEY = "composite"  # layer.metadata key of an RGB composite made by this plugin
PLUGIN = "napari-convnp"
READER_PATTERNS = ("*.tif", "*.tiff", "*.TIF", "*.TIFF")  # as in napari.yaml

# --- band numbering and RGB composites ---------------------------------------------------------------

# Landsat band numbers of each colour, per sensor: TM (Landsat 4/5) and ETM+ (Landsat 7) share one
# numbering, OLI (Landsat 8/9) adds a coastal band 1 and so shifts the others by one.
BAND_ROLES = {
    "tm": {1: "blue", 2: "green", 3: "red", 4: "nir", 5: "swir1", 7: "swir2"},
    "oli": {1: "coastal", 2: "blue", 3: "green", 4: "red", 5: "nir", 6: "swir1", 7: "swir2"},
}
COMPOSITE_ROLES = (
    ("natural colour", ("red", "green", "blue")),
    ("false colour", ("nir", "red", "green")),
    ("SWIR", ("swir1", "nir", "red")),
)
AS_STORED = "as stored (bands 1-2-3)"
_BAND_NUMBER = re.compile(r"(?i)(?<![a-z])(?:sr_|st_)?b(\d{1,2})(?!\d)")
_COLOUR_WORDS = {"blue": "blue", "green": "green", "red": "red", "nir": "nir", "swir1": "swir1", "swir 1": "swir1",
                 "swir2": "swir2", "swir 2": "swir2", "coastal": "coastal"}


def band_numbers(scene: Scene) -> list[int | None]:
    """The Landsat band number of every band: from band names ('B4', 'SR_B4', 'ETM+ B4 NIR'), else from
    a file name that spells them ('…_B234.tif', '…_B1-7.tif'), else the sensor's usual stack order when
    there are at least 4 bands; None where unknown (3 unnamed bands are often a composite already)."""
    count = len(scene.band_names)
    found = [_BAND_NUMBER.search(name) for name in scene.band_names]
    if all(found):
        return [int(m.group(1)) for m in found]
    stem = scene.path.stem if scene.path else ""
    spelled = re.search(r"(?i)_B(\d+)(?=_|$)", stem)
    if spelled and len(spelled.group(1)) == count:
        return [int(d) for d in spelled.group(1)]
    spelled = re.search(r"(?i)_B(\d{1,2})-(\d{1,2})(?=_|$)", stem)
    if spelled and int(spelled.group(2)) - int(spelled.group(1)) + 1 == count:
        return list(range(int(spelled.group(1)), int(spelled.group(2)) + 1))
    if count < 4:
        return [None] * count
    if count == 6:  # the six reflective bands, without thermal (and without OLI's coastal band)
        return [2, 3, 4, 5, 6, 7] if sensor(scene) == "oli" else [1, 2, 3, 4, 5, 7]
    return list(range(1, count + 1))


def band_roles(scene: Scene) -> list[str | None]:
    """What each band sees ('red', 'nir', …) by the sensor's numbering or colour words in band names."""
    roles = BAND_ROLES[sensor(scene)]
    out = [roles.get(n) if n is not None else None for n in band_numbers(scene)]
    for i, name in enumerate(scene.band_names):
        if out[i] is None:
            words = re.sub(r"[^a-z0-9 ]", " ", name.lower())
            out[i] = next((role for word, role in _COLOUR_WORDS.items() if re.search(rf"\b{word}\b", words)), None)
    return out


def composites(scene: Scene) -> dict[str, tuple[int, int, int]]:
    """The RGB composites this scene has bands for: label → band indices (red, green, blue channel).

    Labels name the sensor's band numbers, so a Landsat 8 scene offers 'natural colour (4-3-2)' where a
    Landsat 7 scene offers 'natural colour (3-2-1)'. The first entry is the default."""
    roles, numbers = band_roles(scene), band_numbers(scene)
    out = {}
    for name, needed in COMPOSITE_ROLES:
        if all(role in roles for role in needed):
            idx = tuple(roles.index(role) for role in needed)
            spelled = "-".join(str(numbers[i]) if numbers[i] is not None else roles[i] for i in idx)
            out[f"{name} ({spelled})"] = idx
    if len(scene.band_names) >= 3:
        out[AS_STORED] = (0, 1, 2)
    return out


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

def _geokeys(scene: Scene) -> dict[int, object]:
    """GeoKeyDirectory (tag 34735) entries stored inline: key id → value."""
    raw = scene.geo_tags.get(34735)
    if not raw or len(raw) < 4:
        return {}
    keys = {}
    for k in range(int(raw[3])):
        entry = raw[4 + 4 * k: 8 + 4 * k]
        if len(entry) == 4 and int(entry[1]) == 0:
            keys[int(entry[0])] = int(entry[3])
    return keys


def georeference(scene: Scene) -> dict | None:
    """napari placement of a north-up scene from its GeoTIFF tags, or None (no or rotated georeferencing).

    napari's y axis points down, so the world coordinates are (−northing, easting) of the pixel centres,
    in map units: `scale` is the pixel size (y, x), both positive, and `translate` the map position of
    the first pixel's centre with the northing negated. Scenes of the same map projection then line up
    and the scale bar measures metres (or degrees for a geographic CRS).
    """
    tags = scene.geo_tags
    transform, pixel_scale, tiepoint = tags.get(34264), tags.get(33550), tags.get(33922)
    try:
        if transform is not None and len(transform) >= 8:
            a, b, _, x0, e, f, _, y0 = (float(v) for v in transform[:8])
            if b or e:
                return None  # rotated or sheared: napari would need an affine; left in pixels
            sx, sy = a, -f
        elif pixel_scale is not None and tiepoint is not None and len(pixel_scale) >= 2 and len(tiepoint) >= 6:
            sx, sy = float(pixel_scale[0]), float(pixel_scale[1])
            i, j, _, x, y = (float(v) for v in tiepoint[:5])
            x0, y0 = x - i * sx, y + j * sy
        else:
            return None
    except (TypeError, ValueError):
        return None
    if not (np.isfinite([sx, sy, x0, y0]).all() and sx > 0 and sy > 0):
        return None
    keys = _geokeys(scene)
    half = 0.0 if keys.get(1025) == 2 else 0.5  # PixelIsPoint: the tiepoint is a centre; PixelIsArea: a corner
    if keys.get(1024) == 2:
        unit = "degree"
    else:
        unit = {9001: "m", 9002: "foot", 9003: "foot"}.get(keys.get(3076, 9001))
    placement = {"scale": (sy, sx), "translate": (-(y0 - half * sy), x0 + half * sx)}
    if unit:
        placement["units"] = (unit, unit)
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

GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 42112, 42113)  # georeferencing, GDAL metadata, GDAL nodata
_LANDSAT_NAME = re.compile(r"(?i)^L[CEOTM]0?\d")


def understands(path) -> bool:
    """Whether this plugin should claim a TIFF: it is a GeoTIFF (georeferencing or GDAL tags), is named
    like a Landsat product, or cannot be parsed at all (then the reader's error names the problem). A
    plain TIFF (a micrograph, a photo) is left to other readers."""
    p = Path(path)
    if _LANDSAT_NAME.match(p.name) or BAND_FILE.search(p.name):
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
    elif p.exists() and not p.is_file():  # a FIFO (named pipe), a device: opening it would wait forever
        return None
    elif p.suffix.lower() not in TIFF_SUFFIXES or not understands(p):
        return None
    return read_layers


def read_layers(path) -> list[tuple]:
    if isinstance(path, list):
        path = path[0]
    return scene_layers(read_scene(path))  # a SceneError names the file; napari shows it as a notification


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
