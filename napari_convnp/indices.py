"""Spectral indices of a fill, and the probability that an index exceeds a threshold.

A normalised difference (a − b)/(a + b) of two filled bands is not Gaussian, but the event "index > t" is a
linear one: for a + b > 0, (a − b)/(a + b) > t ⇔ (1 − t)·a − (1 + t)·b > 0. With the fill's Gaussian per
band, that difference is Gaussian, so P(index > t) = Φ(μ/σ) with

    μ = (1 − t)·μa − (1 + t)·μb,   σ² = (1 − t)²·σa² + (1 + t)²·σb² − 2(1 − t)(1 + t)·ρ·σa·σb.

This propagation is exact (no sampling noise, no linearisation) wherever a + b > 0, which reflectance
satisfies, and costs a few array operations: a new threshold needs no refill. The ConvNP predicts the bands
independently, but their errors are not: the detail a fill cannot see (a shore, a field edge) shows in both
bands at once. `error_correlation` estimates ρ from the scene's own known pixels (see there);
benchmarks/water.md checks it against the hidden-pixel residuals. The index's own spread, for display, is the
first-order (delta-method) one of `index_variance`.

numpy and scipy only; the bands are found by `landsat.band_roles` (the package's Landsat band knowledge).
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from .errors import OptionError
from .scene import Scene

# name → (a, b) roles of (a − b)/(a + b)
INDICES = {"mndwi": ("green", "swir1"), "ndwi": ("green", "nir"), "ndvi": ("nir", "red")}
WATER_INDICES = ("mndwi", "ndwi")  # the default for water, in order of preference (MNDWI: Xu 2006)
# Landsat Collection 2 Level-2 surface reflectance: reflectance = DN × gain + offset (USGS LSDS-1619)
C2_SR_GAIN, C2_SR_OFFSET = 2.75e-5, -0.2
_C2_SR = re.compile(r"L2S[PR]", re.IGNORECASE)
# the scale of the detail a fill cannot see: SLC-off gaps are up to 14 pixels wide at 30 m
DETAIL_SIGMA_PX = 4.0
CORRELATION_WINDOW = 2048  # pixels: ρ, a single number, from the central window of a larger scene


@dataclass(frozen=True)
class IndexBands:
    """A normalised difference (a − b)/(a + b): its name and the indices of bands a and b in the scene."""

    name: str
    a: int
    b: int


def band_roles_of(names: list[str], product: str = "") -> list[str | None]:
    """What each band sees ('green', 'swir1', …) from band names and a product or file name (the sensor)."""
    from .landsat import band_roles

    return band_roles(_named_only(names, product))


def _named_only(names: list[str], product: str) -> Scene:
    """A Scene of no pixels: what the band rules read (band names, and the file name for the sensor)."""
    empty = (len(names), 0, 0)
    return Scene(np.empty(empty, np.float32), list(names), np.empty(empty, bool),
                 path=Path(product) if product else None)


def index_bands(index: str | None, names: list[str], product: str = "") -> IndexBands:
    """The bands of `index`: 'mndwi', 'ndwi', 'ndvi', two band names or Landsat numbers 'B3,B6', or None for
    water (MNDWI where green and SWIR1 are there, else NDWI). OptionError names what is missing."""
    roles = band_roles_of(names, product)
    listed = ", ".join(names)
    if index is None:
        for name in WATER_INDICES:
            if all(role in roles for role in INDICES[name]):
                return IndexBands(name, *(roles.index(role) for role in INDICES[name]))
        raise OptionError(f"no green and SWIR1 (or NIR) band found among the bands ({listed}) for a water index; "
                          "name two bands with --index B_a,B_b")
    key = str(index).strip().lower()
    if key in INDICES:
        missing = [role for role in INDICES[key] if role not in roles]
        if missing:
            raise OptionError(f"index {key} needs the {' and '.join(missing)} band, not among the bands ({listed})")
        return IndexBands(key, *(roles.index(role) for role in INDICES[key]))
    parts = [p.strip() for p in key.split(",")]
    if len(parts) != 2 or not all(parts):
        raise OptionError(f"unknown index '{index}': use {', '.join(INDICES)} or two bands 'B_a,B_b' (e.g. B3,B6)")
    a, b = (_band_named(part, names, product) for part in parts)
    if a == b:
        raise OptionError(f"index '{index}' names one band twice; a normalised difference needs two")
    return IndexBands(",".join(part.upper() for part in parts), a, b)


def _band_named(part: str, names: list[str], product: str) -> int:
    """The band called `part` (its name, or its Landsat number 'B6' as the sensor numbers it)."""
    lowered = [n.strip().lower() for n in names]
    if part in lowered:
        return lowered.index(part)
    number = re.fullmatch(r"(?:sr_)?b?(\d{1,2})", part)
    if number:
        from .landsat import band_numbers

        found = band_numbers(_named_only(names, product))
        if int(number.group(1)) in found:
            return found.index(int(number.group(1)))
    raise OptionError(f"index band '{part}' is not among the bands ({', '.join(names)})")


def is_c2_surface_reflectance(scene: Scene) -> bool:
    """A Landsat Collection 2 Level-2 product (L2SP/L2SR in the file name, band names or metadata) in its
    stored integers, whose reflectance is DN × 2.75e-5 − 0.2."""
    texts = [scene.path.name if scene.path else "", *scene.band_names, scene.gdal_metadata or ""]
    integers = np.dtype(scene.source_dtype).kind in "ui"
    return integers and any(_C2_SR.search(text) for text in texts)


def reflectance_scale(scene: Scene) -> tuple[float, float]:
    """(gain, offset) taking the scene's values to reflectance: C2 L2 SR's where it is that product, else
    (1, 0): other reflectance (×1e4 as well) has the same normalised differences, and DN has no known offset
    (a user threshold then; the default 0 assumes reflectance)."""
    return (C2_SR_GAIN, C2_SR_OFFSET) if is_c2_surface_reflectance(scene) else (1.0, 0.0)


def check_threshold(threshold) -> float:
    """A normalised difference lies in [−1, 1]: so must its threshold."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not -1 <= threshold <= 1:
        raise OptionError(f"the threshold must be a number in [-1, 1] (a normalised difference's range), "
                          f"not {threshold!r}")
    return float(threshold)


def normalised_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a − b)/(a + b); NaN where a + b is 0 or unknown."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total != 0, (a - b) / total, np.float32(np.nan)).astype(np.float32)


def index_variance(mean_a, mean_b, var_a, var_b, rho: float = 0.0) -> np.ndarray:
    """The index's variance to first order (delta method), for display: ∂/∂a = 2b/(a+b)², ∂/∂b = −2a/(a+b)²."""
    mean_a, mean_b = np.asarray(mean_a, np.float32), np.asarray(mean_b, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        da, db = 2 * mean_b / (mean_a + mean_b) ** 2, -2 * mean_a / (mean_a + mean_b) ** 2
        var = da ** 2 * var_a + db ** 2 * var_b + 2 * rho * da * db * np.sqrt(var_a * var_b)
    return var.astype(np.float32)


def probability_above(mean_a, mean_b, var_a, var_b, threshold: float, rho: float = 0.0) -> np.ndarray:
    """P((a − b)/(a + b) > threshold) per pixel for Gaussian bands a, b whose errors correlate by `rho` (closed
    form, see the module); 0 or 1 where both variances are 0 (known pixels), NaN where a mean is unknown. Where
    the means sum below 0 the inequality turns round. Arrays of one shape (H×W)."""
    t = check_threshold(threshold)
    return ProbabilityAbove(mean_a, mean_b, var_a, var_b, rho)(t)


class ProbabilityAbove:
    """`probability_above` prepared for many thresholds (a slider): what does not depend on the threshold is found
    once — the known pixels' index (there P is 0 or 1: index > t), which pixels have a spread, their means and
    variances — so a threshold costs one comparison over the pixels and Φ over the filled ones."""

    def __init__(self, mean_a, mean_b, var_a, var_b, rho: float = 0.0):
        if not -1 <= rho <= 1:
            raise OptionError(f"the band error correlation must be in [-1, 1], not {rho!r}")
        self.shape = np.broadcast_shapes(*(np.shape(x) for x in (mean_a, mean_b, var_a, var_b)))  # () for numbers
        mean_a, mean_b, var_a, var_b = np.broadcast_arrays(
            *(np.atleast_1d(np.asarray(x, np.float32)) for x in (mean_a, mean_b, var_a, var_b)))
        with np.errstate(divide="ignore", invalid="ignore"):  # a + b = 0: ±inf, the sign of a − b decides
            self.index = (mean_a - mean_b) / (mean_a + mean_b)
        unknown = np.isnan(mean_a) | np.isnan(mean_b)
        self.unknown = unknown if unknown.any() else None
        spread = ((var_a > 0) | (var_b > 0)).reshape(-1)  # Φ only where there is a spread (the filled pixels)
        self.spread = np.flatnonzero(spread) if spread.any() else None  # flat indices: ~8× faster than a mask
        if self.spread is not None:
            mean_a, mean_b, var_a, var_b = (x.reshape(-1) for x in (mean_a, mean_b, var_a, var_b))
            self.var_a, self.var_b = var_a[spread], var_b[spread]
            self.spread_a, self.spread_b = mean_a[spread], mean_b[spread]
            self.cross = np.float32(2 * rho) * np.sqrt(self.var_a * self.var_b) if rho else None
            turned = self.spread_a + self.spread_b < 0  # the inequality turns round there
            self.turned = turned if turned.any() else None

    def __call__(self, threshold: float) -> np.ndarray:
        t = check_threshold(threshold)
        prob = np.greater(self.index, np.float32(t)).astype(np.float32)  # the known pixels
        if self.spread is not None:
            p, q = np.float32(1 - t), np.float32(1 + t)
            var = p * p * self.var_a + q * q * self.var_b
            if self.cross is not None:
                var -= p * q * self.cross
            with np.errstate(divide="ignore", invalid="ignore"):  # σ = 0 (ρ = 1, equal spreads): ±inf, Φ: 0 or 1
                z = (p * self.spread_a - q * self.spread_b) / np.sqrt(np.maximum(var, 0))
            spread = np.where(np.isnan(z), np.float32(0), special.ndtr(z)).astype(np.float32)
            if self.turned is not None:
                spread = np.where(self.turned, 1 - spread, spread)
            prob.reshape(-1)[self.spread] = spread
        if self.unknown is not None:
            prob[self.unknown] = np.nan
        return prob.reshape(self.shape)


def error_correlation(band_a: np.ndarray, band_b: np.ndarray, known: np.ndarray,
                      sigma: float = DETAIL_SIGMA_PX) -> float:
    """ρ between two bands' fill errors, estimated from the scene's own known pixels without a refill.

    A fill misses the detail finer than a gap: what is left of each band after a smoothing at the gap's scale
    (a normalised Gaussian of the known pixels, `sigma` pixels). The correlation of that detail between the two
    bands, over pixels known in both, stands in for the correlation of their errors in the gaps; 0 where there
    is too little detail to say. benchmarks/water.py compares it with the hidden-pixel residuals.
    """
    starts = [max(0, (n - CORRELATION_WINDOW) // 2) for n in np.shape(known)]
    window = tuple(slice(start, start + CORRELATION_WINDOW) for start in starts)
    band_a, band_b = np.asarray(band_a[window], np.float32), np.asarray(band_b[window], np.float32)
    known = np.asarray(known[window], bool) & np.isfinite(band_a) & np.isfinite(band_b)
    if known.sum() < 100:
        return 0.0
    weight = ndimage.gaussian_filter(known.astype(np.float32), sigma)
    detail = []
    for band in (band_a, band_b):
        with np.errstate(divide="ignore", invalid="ignore"):
            detail.append((band - ndimage.gaussian_filter(np.where(known, band, 0), sigma) / weight)[known])
    x, y = (d.astype(np.float64) - d.mean(dtype=np.float64) for d in detail)
    scale = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float(np.clip((x * y).sum() / scale, -1, 1)) if scale > 0 else 0.0
