"""Scenes as napari layers: band numbers and RGB composites, display limits, placement on the map, and a
layer back as a Scene. The npe2 reader, writers and sample data are in `_reader.py`, `_writer.py`,
`_sample_data.py`."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from .landsat import band_numbers, composites  # noqa: F401 - band_numbers: as before
from .landsat import sensor_family as sensor  # noqa: F401 - the package's one sensor rule (also for composites)
from .scene import Scene
from .tiffread import TiffPixels

# The shipped sample scenes live inside the package, so a wheel and `pip install .` carry them.
SAMPLE_DIR = Path(__file__).parent / "sample_data"
SCENE_KEY = "napari_convnp_scene"  # layer.metadata key holding the Scene (georeferencing, band names)
STACK_KEY = "napari_convnp_stack"  # layer.metadata key holding the stack.Stack of a stack layer (dates, masks)
COMPOSITE_KEY = "composite"  # layer.metadata key of an RGB composite made by this plugin

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


def stretch_limits(band: np.ndarray, low: float = 2, high: float = 98) -> tuple[float, float] | None:
    """A band's low and high percentiles (2–98 %), what `stretch` maps to 0 and 255; None if it has no data."""
    limits = display_percentiles(band, [low, high])
    return None if limits is None else (float(limits[0]), float(limits[1]))


def stretch(band: np.ndarray, limits: tuple[float, float] | None) -> np.ndarray:
    """Contrast stretch of `limits` (`stretch_limits`) to 0…255 (uint8: a composite is for the eye); NaN (no data)
    becomes 0, and so does everything without limits."""
    if limits is None:
        return np.zeros(band.shape, np.uint8)
    lo, hi = limits
    with np.errstate(invalid="ignore"):
        out = np.clip((band - lo) * (255 / (hi - lo if hi > lo else 1.0)), 0, 255)
    return np.nan_to_num(out, copy=False).astype(np.uint8)


def composite_limits(scene: Scene, choice: str) -> list | None:
    """The stretch of each channel of a composite of this scene (None if it has no such composite): its fills'
    composites are stretched the same, so that their colours compare with the scene's own."""
    idx = composites(scene).get(choice)
    return None if idx is None else [stretch_limits(scene.bands[i]) for i in idx]


def rgb_composite(scene: Scene, choice: str, limits: list | None = None) -> np.ndarray | None:
    """A composite as H×W×3 uint8, each channel stretched by its own 2–98 % percentiles or by `limits`
    (`composite_limits` of another scene: a fill shown as its scene is)."""
    idx = composites(scene).get(choice)
    if idx is None:
        return None
    limits = limits or [stretch_limits(scene.bands[i]) for i in idx]
    return np.stack([stretch(scene.bands[i], lim) for i, lim in zip(idx, limits)], -1)


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


# the "unusable" layer of a stack: 1 = never context (nodata, stripes, snow, fill), 2 = cloud, cirrus or shadow
UNUSABLE_COLOURS = {None: "transparent", 0: "transparent", 1: "magenta", 2: "cyan"}


def stack_name(stack) -> str:
    """The folder the dates came from, when they share one; else 'stack of N dates'."""
    parents = {path.parent for path in stack.paths}
    return next(iter(parents)).name if len(parents) == 1 else f"stack of {len(stack)} dates"


def stack_layers(stack) -> list[tuple]:
    """A stack of dates as one (date, band, y, x) image layer, a slider over the dates, and its per-date masks
    as a Labels layer 'unusable' (1 = never context, 2 = cloud) of the same axes, each date's mask repeated over
    the bands (napari lines layers up on their last axes: a (date, y, x) layer would slide with the bands),
    placed on the map by the first date's georeferencing as a scene is. The Stack rides in the metadata."""
    bands = np.stack([scene.bands for scene in stack.scenes])
    per_date = np.stack(stack.unusable).astype(np.uint8) + np.stack(stack.cloudy)  # cloudy lies inside unusable
    unusable = np.repeat(per_date[:, None], bands.shape[1], axis=1)
    placement = fit_placement(georeference(stack.scenes[0]), 4)
    axes = {"axis_labels": ("date", "band", "y", "x"), "metadata": {STACK_KEY: stack}, **placement}
    return [(bands, {"name": stack_name(stack), "contrast_limits": contrast_limits(bands), "colormap": "gray",
                     **axes}, "image"),
            (unusable, {"name": "unusable", "opacity": 0.5, "colormap": UNUSABLE_COLOURS, **axes}, "labels")]


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
    """A GeoTIFF as a dask array that napari reads window by window as it shows it (of the band on screen, the
    1024² blocks in view, decoding only their tiles), instead of a copy of the whole in memory."""
    import dask.array as da

    pixels = TiffPixels.open(path)
    pixels.whole_rows = False
    _, h, w = pixels.shape
    return da.from_array(pixels, chunks=(1, min(h, 1024), min(w, 1024)), asarray=True, fancy=False, lock=False,
                         name=f"napari-convnp-{Path(path).name}")
