"""P(water) from a fill, the water area with its 95 % interval, and a scene file to a water-probability file.

Water is "index > threshold" (MNDWI > 0 by default); its probability per pixel comes in closed form from the
fill's Gaussians (`indices.probability_above`), so a new threshold needs no refill. Known pixels are water or not
(0 or 1); only filled pixels carry a probability between.

The area: known water plus the filled pixels that are water, a sum of dependent Bernoulli variables. Neighbouring
pixels of one gap share their errors, so treating them as independent would make the interval far too narrow.
`area_interval` draws the filled pixels jointly through a Gaussian copula: one latent Gaussian field per draw
with the spatial correlation exp(−d²/2L²) of the fill's standardised errors (L measured on hidden pixels of val/
scenes, benchmarks/water.md), a pixel being water where its latent value falls below Φ⁻¹(P). Each pixel keeps
its own P exactly; only the dependence comes from the field. The copula trusts P to be calibrated, yet a small
bias per pixel adds up over thousands of filled pixels: `calibration_bound` widens the sampled interval by the
calibration error measured on val/ per filled pixel, a stated conservative bound (benchmarks/water.md).

Knows files through `scene` and `fileio`, never napari.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage, special

from . import __version__
from .errors import Cancelled, OptionError, SceneError
from .indices import (
    IndexBands,
    ProbabilityAbove,
    check_threshold,
    error_correlation,
    index_bands,
    is_c2_surface_reflectance,
    reflectance_scale,
)
from .masks import pixel_metres
from .scene import Scene, read_scene
from .tiffwrite import check_output_path, write_bands

# Both measured on the hidden pixels of the val/ Manaus and Liverpool crops (benchmarks/water.md):
# the correlation length (pixels) of the fill's standardised errors, fitted as exp(−d²/2L²) to lags 1–15 px;
ERROR_LENGTH_PX = 2.2
# the expected calibration error of the ConvNP's P(water) (10 bins): a bound on the bias of the filled area per
# filled pixel, which the copula cannot see (a sum of 15,000 slightly biased P has a bias larger than its spread).
CALIBRATION_ERROR = 0.023
AREA_DRAWS = 200
LEVEL = 0.95


@dataclass
class WaterMap:
    """P(water) per pixel (H×W float32 in [0, 1], NaN where unknown), how it was computed, and which pixels
    were filled (their P lies between 0 and 1; the others are 0 or 1)."""

    probability: np.ndarray
    filled: np.ndarray
    index: IndexBands
    threshold: float
    band_correlation: float
    scale: tuple[float, float]


@dataclass(frozen=True)
class Area:
    """A water area (in the unit of `pixel_area`): expected value and the `level` interval."""

    expected: float
    low: float
    high: float
    known: float  # the part on known pixels (exact)
    level: float = LEVEL
    sampled: tuple[float, float] | None = None  # the interval of the copula alone, before the calibration bound


def water_probability(mean: np.ndarray, variance: np.ndarray | None, index: IndexBands, threshold: float = 0.0,
                      *, band_correlation: float = 0.0, scale: tuple[float, float] = (1.0, 0.0)) -> np.ndarray:
    """P(index > threshold) per pixel from a fill's mean and variance (C×H×W).

    variance None (a classical fill): the hard map of the mean, 0 or 1. scale: (gain, offset) to reflectance
    (`indices.reflectance_scale`); band_correlation: ρ of the two bands' errors (`indices.error_correlation`)."""
    return water_probability_at(mean, variance, index, band_correlation=band_correlation, scale=scale)(threshold)


def water_probability_at(mean: np.ndarray, variance: np.ndarray | None, index: IndexBands, *,
                         band_correlation: float = 0.0, scale: tuple[float, float] = (1.0, 0.0)) -> ProbabilityAbove:
    """`water_probability` prepared for many thresholds: called with a threshold, it gives P at it. What a
    threshold slider keeps: a new threshold then costs no refill and little else (`indices.ProbabilityAbove`)."""
    gain, offset = scale
    a, b = (mean[i] if gain == 1 and offset == 0 else mean[i] * np.float32(gain) + np.float32(offset)
            for i in (index.a, index.b))
    if variance is None:
        zero = np.zeros(a.shape, np.float32)
        var_a = var_b = zero
    else:
        var_a, var_b = (variance[i] if gain == 1 else variance[i] * np.float32(gain * gain)
                        for i in (index.a, index.b))
    return ProbabilityAbove(a, b, var_a, var_b, band_correlation)


def water_map(mean: np.ndarray, variance: np.ndarray | None, filled: np.ndarray, names: list[str], *,
              index: str | None = None, threshold: float = 0.0, product: str = "",
              scale: tuple[float, float] = (1.0, 0.0), band_correlation: float | None = None) -> WaterMap:
    """P(water) of a fill given as arrays and band names. filled: the fill's mask (H×W or C×H×W, True = filled).
    product: a file or product name that tells the sensor. band_correlation None: estimated on the known pixels."""
    return index_water_map(mean, variance, filled, index_bands(index, names, product), check_threshold(threshold),
                           scale, band_correlation)


def index_water_map(mean, variance, filled, bands: IndexBands, threshold: float, scale,
                    band_correlation: float | None = None) -> WaterMap:
    """`water_map` with the index's bands already found: what callers that keep only those two bands use (a
    streamed fill, the widget's Water step)."""
    filled = np.asarray(filled, bool)
    if filled.ndim == 3:
        filled = filled[bands.a] | filled[bands.b]
    if band_correlation is None:
        band_correlation = 0.0 if variance is None else error_correlation(mean[bands.a], mean[bands.b], ~filled)
    prob = water_probability(mean, variance, bands, threshold, band_correlation=band_correlation, scale=scale)
    return WaterMap(prob, filled & np.isfinite(prob), bands, threshold, band_correlation, scale)


def scene_water_map(scene: Scene, fill, filled: np.ndarray, **options) -> WaterMap:
    """`water_map` of `fill` (an `inpaint.Fill`) of `scene`: band names, sensor and reflectance scale from it."""
    return water_map(fill.mean, fill.variance, filled, scene.band_names, product=_product(scene),
                     scale=reflectance_scale(scene), **options)


def _product(scene: Scene) -> str:
    return scene.path.name if scene.path is not None else ""


def correlated_normals(rows: np.ndarray, cols: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """At pixels (rows, cols): a Gaussian field of unit variance with correlation exp(−d²/2L²) between pixels d
    apart (L = `length`; below 1 pixel, independent values).

    White noise smoothed by a Gaussian of σ = L/√2 (whose autocorrelation has σ = L), on a grid L/3 pixels apart
    and interpolated bilinearly at the pixels: the field is smooth at that scale, so the coarse grid loses little
    and a scene's field costs little."""
    if length < 1:
        return rng.standard_normal(len(rows), dtype=np.float32)
    step = max(1, int(length // 3))
    sigma = length / math.sqrt(2) / step
    radius = int(4 * sigma + 0.5)  # scipy's kernel (truncate=4)
    kernel = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    coarse = [max(int(n.max()) // step + 2, 2 * radius + 1) for n in (rows, cols)]
    noise = rng.standard_normal(coarse, dtype=np.float32)
    field = ndimage.gaussian_filter(noise, sigma, mode="wrap") / np.float32((kernel ** 2).sum())
    if step == 1:  # the grid is the pixels'
        return field[rows.astype(np.intp), cols.astype(np.intp)]
    return ndimage.map_coordinates(field, [rows / step, cols / step], order=1)


def area_interval(probability: np.ndarray, filled: np.ndarray, *, pixel_area: float = 1.0,
                  length: float = ERROR_LENGTH_PX, draws: int = AREA_DRAWS, level: float = LEVEL,
                  seed: int = 0, calibration_error: float = CALIBRATION_ERROR,
                  progress: Callable[[int, int], None] | None = None,
                  cancelled: Callable[[], bool] | None = None) -> Area:
    """The water area with its `level` interval: known pixels count 0 or 1, filled pixels are drawn jointly
    (`draws` draws of the Gaussian copula of the module doc, correlation length `length` pixels), and the
    interval is widened by `calibration_error` × the filled pixels on each side (`calibration_bound`).
    Seconds on a large scene: progress(done, draws) after each draw; `errors.Cancelled` once cancelled() is true."""
    probability = np.asarray(probability, np.float32)
    filled = np.asarray(filled, bool) & np.isfinite(probability)
    known = ~filled & np.isfinite(probability)
    known_water = float(np.count_nonzero(probability[known] > 0.5))
    p = probability[filled].astype(np.float64)
    expected = known_water + float(p.sum())
    if not filled.any():
        return Area(expected * pixel_area, expected * pixel_area, expected * pixel_area, known_water * pixel_area,
                    level)
    rows, cols = np.nonzero(filled)
    rows, cols = (rows - rows.min()).astype(np.float32), (cols - cols.min()).astype(np.float32)
    cut = special.ndtri(np.clip(p, 1e-12, 1 - 1e-12)).astype(np.float32)
    rng = np.random.default_rng(seed)
    counts = np.empty(draws)
    for k in range(draws):
        if cancelled is not None and cancelled():
            raise Cancelled("area interval")
        latent = correlated_normals(rows, cols, length, rng)
        counts[k] = np.count_nonzero(latent < cut)
        if progress is not None:
            progress(k + 1, draws)
    low, high = np.quantile(counts, [(1 - level) / 2, (1 + level) / 2])
    wide = calibration_bound(low, high, len(p), calibration_error)
    return Area(expected * pixel_area, (known_water + wide[0]) * pixel_area, (known_water + wide[1]) * pixel_area,
                known_water * pixel_area, level, ((known_water + low) * pixel_area, (known_water + high) * pixel_area))


def calibration_bound(low: float, high: float, filled: int, calibration_error: float) -> tuple[float, float]:
    """A sampled interval of the filled pixels' water count widened by the bias that a calibration error allows:
    |Σ (water − P)| ≤ calibration_error × filled pixels (the expected calibration error bounds the mean bias per
    pixel), within [0, filled]. A stated conservative bound: benchmarks/water.md gives its coverage."""
    slack = calibration_error * filled
    return max(0.0, low - slack), min(float(filled), high + slack)


def pixel_area_km2(scene: Scene) -> float | None:
    """A pixel's ground area in km² from the georeferencing (square pixels; degrees converted), None without."""
    size = scene.pixel_size
    return None if size is None else pixel_metres(size) ** 2 / 1e6


def looks_like_digital_numbers(scene: Scene) -> bool:
    """Integers that are not known reflectance: the default threshold 0 may not mean water on them."""
    if is_c2_surface_reflectance(scene):
        return False
    text = " ".join([*scene.band_names, scene.gdal_metadata or ""]).lower()
    return np.dtype(scene.source_dtype).kind in "ui" and "reflectance" not in text


def reflectance_note(scene: Scene, threshold_given: bool) -> str | None:
    """A one-line note where the default threshold may not mean water (`looks_like_digital_numbers`)."""
    if threshold_given or not looks_like_digital_numbers(scene):
        return None
    return (f"{scene.name}: the values look like digital numbers, not reflectance; the default threshold 0 "
            "assumes reflectance: choose --threshold for this scene")


def water_file(input: str | os.PathLike, out: str | os.PathLike, *, mask: str | os.PathLike | None = None,
               invert_mask: bool = False, reference: list[str | os.PathLike] | None = None,
               index: str | None = None, threshold: float | None = None, method: str = "convnp",
               density: float = 1.0, device: str = "auto", seed: int = 0, tile: int | None = None,
               precision: str = "float32", draws: int = AREA_DRAWS, progress=None, cancelled=None,
               **fill_options) -> dict:
    """Fill a scene file, then write P(water) as a float32 GeoTIFF (georeferencing kept); returns a summary
    with the water area and its 95 % interval in km² (pixels where the scene has no pixel size) and the filled
    share. threshold None: 0, which assumes reflectance (a note says so for digital numbers)."""
    from .fileio import check_options, fill_notes, mask_of, scene_gaps
    from .inpaint import FillError, fill
    from .options import VARIANCE_METHODS

    input, out = Path(input), Path(out)
    references = [Path(r) for r in (reference or [])]
    mask = Path(mask) if mask is not None else None
    for path, role in [(input, "input"), (mask, "mask"), *((ref, "reference") for ref in references)]:
        if path is not None and not path.exists():
            raise SceneError(f"{path}: no such file or folder ({role})")
    inputs = [input, *([mask] if mask else []), *references]
    check_output_path(out, inputs)
    try:
        given = threshold is not None
        threshold = check_threshold(0.0 if threshold is None else threshold)
        check_options(method=method, density=density, seed=seed, tile=tile, precision=precision, dtype="auto",
                      device=device, reference=references, biharmonic_weight=fill_options.get("biharmonic_weight"))
        if not isinstance(draws, int) or draws < 20:
            raise OptionError(f"draws must be a whole number of at least 20 (for a 95 % interval), not {draws!r}")
    except (OptionError, FillError) as err:
        raise OptionError(f"{input}: {err}") from None
    scene = read_scene(input, lazy_float=True)
    try:
        bands = index_bands(index, scene.band_names, _product(scene))
    except OptionError as err:
        raise OptionError(f"{input}: {err}") from None
    check_output_path(out, [*inputs, *scene.sources])
    gaps = mask_of(read_scene(mask), scene, invert_mask) if mask is not None else scene_gaps(scene)
    # the fill streamed: only the index's two bands are kept, so memory is not two scenes' worth
    pair = [bands.a, bands.b]
    mean = np.full((2, *scene.shape[1:]), np.nan, np.float32)
    variance = np.zeros_like(mean) if method in VARIANCE_METHODS else None

    def keep(r0, rows_mean, rows_var):
        rows = slice(r0, r0 + rows_mean.shape[1])
        mean[:, rows] = rows_mean[pair]
        if variance is not None:
            variance[:, rows] = rows_var[pair]

    options = dict(method=method, density=float(density), nodata=scene.nodata if scene.nodata.any() else None,
                   device=device, seed=int(seed), tile=tile, precision=precision, progress=progress, on_rows=keep,
                   **fill_options)
    if cancelled is not None:
        options["cancelled"] = cancelled
    if references:
        options.update(reference=[str(r) for r in references], scene=scene)
    try:
        with np.errstate(all="ignore"):
            result = fill(scene.bands, gaps, **options)
    except FillError as err:
        raise FillError(f"{input}: {err}") from None
    water = index_water_map(mean, variance, gaps[pair], IndexBands(bands.name, 0, 1), threshold,
                            reflectance_scale(scene))
    km2 = pixel_area_km2(scene)
    area = area_interval(water.probability, water.filled, pixel_area=km2 or 1.0, draws=draws, seed=int(seed))
    unit = "km2" if km2 else "pixels"
    metadata = {"output": f"P({bands.name} > {threshold:g}) per pixel (0 or 1 where known)", "source": input.name,
                "method": method, "version": f"napari-convnp {__version__}",
                "band_correlation": f"{water.band_correlation:.3f}", "threshold": f"{threshold:g}",
                "references": ";".join(r.name for r in references) or None}
    write_bands(out, water.probability[None], like=scene, names=[f"P(water) {bands.name}"], metadata=metadata,
                protect=[*inputs, *scene.sources])
    summary = {"input": str(input), "out": str(out), "method": method, "index": bands.name,
               "bands": [scene.band_names[bands.a], scene.band_names[bands.b]], "threshold": threshold,
               "reflectance_scale": list(water.scale), "band_correlation": round(water.band_correlation, 3),
               f"water_{unit}": _round(area.expected),
               # a hard map (a classical fill) says nothing of its own errors: no interval
               f"water_{unit}_95": [_round(area.low), _round(area.high)] if variance is not None else None,
               f"water_known_{unit}": _round(area.known),
               "filled_pixels": int(water.filled.sum()), "filled_share": round(float(water.filled.mean()), 4),
               "seconds": round(result.seconds, 2), **fill_notes(result)}
    note = reflectance_note(scene, given)
    if note:
        summary["note"] = note
    return summary


def _round(value: float) -> float:
    return float(f"{value:.6g}")
