"""Classical gap fills, for comparison with the ConvNP.

Each takes (bands C×H×W, context C×H×W bool) and returns the filled bands: every pixel outside the
context gets a value; pixels in the context keep theirs. `inpaint.fill` wraps them behind the same
call shape as the model.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage


def prefill_nearest(band: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Every pixel takes the value of its nearest known pixel (a cheap boundary condition)."""
    idx = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
    return band[tuple(idx)]


def biharmonic(bands: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Biharmonic inpainting (scikit-image), one region at a time to bound its memory."""
    from skimage.restoration import inpaint_biharmonic

    out = np.empty_like(bands)
    for b, (band, known) in enumerate(zip(bands, context)):
        lo, hi = _range(band, known)
        scaled = (prefill_nearest(band, known) - lo) / (hi - lo)
        out[b] = inpaint_biharmonic(scaled, ~known, split_into_regions=True) * (hi - lo) + lo
    return out


def _opencv(bands: np.ndarray, context: np.ndarray, flag_name: str, radius: int = 5) -> np.ndarray:
    """OpenCV inpainting on 16-bit images: on float32 in [0, 1] Telea returns garbage, so scale first."""
    import cv2

    flag = getattr(cv2, flag_name)
    out = np.empty_like(bands)
    for b, (band, known) in enumerate(zip(bands, context)):
        lo, hi = _range(band, known)
        scaled = np.round((prefill_nearest(band, known) - lo) / (hi - lo) * 65535).astype(np.uint16)
        filled = cv2.inpaint(scaled, (~known).astype(np.uint8), radius, flag)
        out[b] = filled.astype(np.float32) / 65535 * (hi - lo) + lo
    return out


def telea(bands, context):
    """OpenCV's fast-marching method (Telea 2004)."""
    return _opencv(bands, context, "INPAINT_TELEA")


def navier_stokes(bands, context):
    """OpenCV's Navier–Stokes inpainting (Bertalmio et al. 2001)."""
    return _opencv(bands, context, "INPAINT_NS")


def idw(bands: np.ndarray, context: np.ndarray, smoothing_passes: int = 2) -> np.ndarray:
    """GDAL FillNodata style: inverse-distance weighting of the nearest known pixel in each of the
    four axis directions, then 3×3 smoothing passes over the filled pixels."""
    out = np.empty_like(bands)
    for b, (band, known) in enumerate(zip(bands, context)):
        total = np.zeros(band.shape, np.float64)
        weights = np.zeros(band.shape, np.float64)
        for axis in (0, 1):
            for flip in (False, True):
                value, dist = _nearest_along(band, known, axis, flip)
                w = np.where(np.isfinite(dist), 1.0 / np.maximum(dist, 1) ** 2, 0.0)
                total += w * np.nan_to_num(value)
                weights += w
        filled = np.where(weights > 0, total / np.maximum(weights, 1e-30), np.nan)
        filled = np.where(np.isnan(filled), prefill_nearest(band, known), filled)
        filled = np.where(known, band, filled)
        for _ in range(smoothing_passes):
            smooth = ndimage.uniform_filter(filled, 3, mode="nearest")
            filled = np.where(known, band, smooth)
        out[b] = filled
    return out


def _nearest_along(band, known, axis, flip):
    """Value of and distance to the nearest known pixel before each pixel along an axis."""
    a, k = np.moveaxis(band, axis, -1), np.moveaxis(known, axis, -1)
    if flip:
        a, k = a[..., ::-1], k[..., ::-1]
    pos = np.arange(a.shape[-1])
    last = np.maximum.accumulate(np.where(k, pos, -1), axis=-1)
    value = np.take_along_axis(a, np.maximum(last, 0), axis=-1)
    dist = np.where(last >= 0, pos - last, np.inf).astype(np.float64)
    if flip:
        value, dist = value[..., ::-1], dist[..., ::-1]
    return np.moveaxis(value, -1, axis), np.moveaxis(dist, -1, axis)


def gaussian(bands: np.ndarray, context: np.ndarray, sigmas=(2.0, 4.0, 8.0, 16.0, 32.0)) -> np.ndarray:
    """Normalised convolution: Gaussian-weighted mean of the known pixels, at the smallest scale
    that has enough of them nearby."""
    out = np.empty_like(bands)
    for b, (band, known) in enumerate(zip(bands, context)):
        values = np.where(known, band, 0).astype(np.float64)
        filled = np.full(band.shape, np.nan)
        for sigma in sigmas:
            weight = ndimage.gaussian_filter(known.astype(np.float64), sigma, mode="nearest")
            estimate = ndimage.gaussian_filter(values, sigma, mode="nearest") / np.maximum(weight, 1e-12)
            filled = np.where(np.isnan(filled) & (weight > 0.05), estimate, filled)
        filled = np.where(np.isnan(filled), prefill_nearest(band, known), filled)
        out[b] = np.where(known, band, filled)
    return out


def harmonic(bands: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Laplace interpolation (multigrid red-black SOR, torch on the CPU): the base that the ConvNP corrects,
    shown as a fill of its own so that what the network adds can be seen."""
    import torch

    from .model import ModelConfig
    from .solvers import harmonic_fill

    out = np.empty_like(bands)
    with torch.inference_mode():
        for b, (band, known) in enumerate(zip(bands, context)):
            lo, hi = _range(band, known)  # scaled to [0, 1] so large DN keep their float32 precision
            values = torch.from_numpy(((np.where(known, band, lo) - lo) / (hi - lo)).astype(np.float32))
            filled = harmonic_fill(values[None, None], torch.from_numpy(known)[None, None].float(),
                                   ModelConfig.harmonic_iters)
            out[b] = filled[0, 0].numpy() * (hi - lo) + lo
    return out


def regression(bands: np.ndarray, context: np.ndarray, reference: np.ndarray, window: int = 31) -> np.ndarray:
    """Two dates: the scene predicted from the reference by a local linear fit (31-px windows over the
    pixels known in both), plus a biharmonic fill of what that fit leaves; single-image biharmonic where
    the reference is unknown too. The classical two-date fill the ConvNP with a reference must beat."""
    import torch

    from .solvers import local_linear_fit

    out = bands.copy()
    for b, (band, known, ref) in enumerate(zip(bands, context, reference)):
        ref_known = np.isfinite(ref)
        both = known & ref_known
        alone = ~known & ~ref_known
        if alone.any() or not both.any():  # the single-image fill, only where the reference cannot help
            out[b] = np.where(alone | ~both.any(), biharmonic(band[None], known[None])[0], band)
        if not both.any():
            continue
        lo, hi = _range(band, known)
        rlo, rhi = _range(ref, ref_known)
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]  # noqa: E731
        with torch.inference_mode():
            guide = local_linear_fit(as_tensor(np.where(known, (band - lo) / (hi - lo), 0)), as_tensor(known),
                                     as_tensor(np.where(ref_known, (ref - rlo) / (rhi - rlo), 0)),
                                     as_tensor(ref_known), window)[0, 0].numpy() * (hi - lo) + lo
        residual = biharmonic(np.where(both, band - guide, 0)[None].astype(np.float32), both[None])[0]
        out[b] = np.where(ref_known & ~known, guide + residual, out[b])
    return out


MULTIBAND_TILE = 512


def multiband(bands: np.ndarray, context: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Two dates, every band of the other date: each band predicted from all bands of the reference by a ridge
    regression in 33-px windows (a change of season moves the bands differently), plus a biharmonic fill of what
    that fit leaves; the `regression` fill where a reference band is unknown. Fitted on the pixels known in every
    band of both dates, on per-band z-scores, in 512-px tiles (the fit's window sums take ~70 planes a tile)."""
    import torch

    from .model import band_stats
    from .solvers import MULTIBAND_BLOCK, MULTIBAND_WINDOW, multiband_fit

    ref_known = np.isfinite(reference)
    if not (context.all(0) & ref_known.all(0)).any():
        return regression(bands, context, reference)  # no pixel known in every band of both: nothing to fit on
    offsets, scales = band_stats(bands, context)
    r_offsets, r_scales = band_stats(reference, ref_known)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[:, None]  # noqa: E731
    z = np.where(context, (bands - offsets[:, None, None]) / scales[:, None, None], 0)
    r = np.where(ref_known, (reference - r_offsets[:, None, None]) / r_scales[:, None, None], 0)
    guide = np.empty(bands.shape, np.float32)
    fitted = np.empty(bands.shape[1:], bool)
    h, w = fitted.shape
    halo = (MULTIBAND_WINDOW // 2 + 2) * MULTIBAND_BLOCK  # a tile's windows see this far beyond it
    for r0, c0 in itertools.product(range(0, h, MULTIBAND_TILE), range(0, w, MULTIBAND_TILE)):
        rows, cols = slice(max(0, r0 - halo), r0 + MULTIBAND_TILE + halo), slice(max(0, c0 - halo),
                                                                             c0 + MULTIBAND_TILE + halo)
        with torch.inference_mode():
            fit, known = multiband_fit(*(as_tensor(a[:, rows, cols]) for a in (z, context, r, ref_known)), len(bands))
        inner = (slice(r0 - rows.start, r0 - rows.start + MULTIBAND_TILE),
                 slice(c0 - cols.start, c0 - cols.start + MULTIBAND_TILE))
        guide[:, r0:r0 + MULTIBAND_TILE, c0:c0 + MULTIBAND_TILE] = fit[:, 0][(slice(None), *inner)].numpy()
        fitted[r0:r0 + MULTIBAND_TILE, c0:c0 + MULTIBAND_TILE] = known[0, 0][inner].numpy() > 0
    guide = guide * scales[:, None, None] + offsets[:, None, None]
    every = ref_known.all(0)
    # where a reference band is unknown: the regression fill (its biharmonic solves cost seconds: only if needed)
    out = regression(bands, context, reference) if (~context & ~every).any() else np.array(bands, np.float32)
    for b, band in enumerate(bands):
        residual = biharmonic(np.where(fitted, band - guide[b], 0)[None].astype(np.float32), fitted[None])[0]
        out[b] = np.where(every & ~context[b], guide[b] + residual, out[b])
    return out


def _range(band, known):
    values = band[known]
    lo, hi = float(values.min()), float(values.max())
    return lo, hi if hi > lo else lo + 1.0


METHODS = {
    "biharmonic": biharmonic,
    "harmonic": harmonic,
    "telea": telea,
    "ns": navier_stokes,
    "idw": idw,
    "gauss": gaussian,
}


# USGS SLC-off gap fill (Scaramuzza, Storey et al. 2004, "SLC gap-filled products phase one methodology"):
# windows grow from 19×19 to 31×31 until they hold enough pixels known in both dates; larger ones and a
# whole-band fit are our additions, for references with holes of their own.
LLHM_WINDOWS = (19, 23, 27, 31, 47, 63, 95, 127)
LLHM_MIN_COMMON = 144


def llhm(bands: np.ndarray, context: np.ndarray, reference: np.ndarray, *, windows=LLHM_WINDOWS,
         min_common: int = LLHM_MIN_COMMON, gain_limit: float = 1.5) -> np.ndarray:
    """Local linear histogram matching: each gap pixel takes the reference's value under the gain and
    bias that match the reference's mean and standard deviation to the scene's in the smallest window
    around it with `min_common` pixels known in both (gain = σ_scene/σ_ref, bias = μ_scene − gain·μ_ref).

    The gain is kept within `gain_limit` times the whole band's, so a flat reference window (water,
    a saturated field) cannot blow up noise; 1.5 scored best of 1 to unlimited on training pairs
    (Nanjing, Brumadinho, Corumbá, Pucallpa, Costa Rica). Where the reference is unknown too, the
    harmonic fill of the rest. Box sums over the whole image per window size: a 1024²×6 scene in seconds.
    """
    out = np.array(bands, dtype=np.float32, copy=True)
    known = np.array(context, dtype=bool, copy=True)  # grows by the pixels filled from the reference
    for b, (band, ctx, ref) in enumerate(zip(bands, context, reference)):
        ref_known = np.isfinite(ref)
        both, todo = ctx & ref_known, ~ctx & ref_known
        if both.sum() < 2 or not todo.any():
            continue
        # Centred on the whole band's means, so sums of squares keep their float64 precision.
        t_mean, r_mean = float(band[both].mean()), float(ref[both].mean())
        t = np.where(both, band - t_mean, 0).astype(np.float64)
        r = np.where(ref_known, ref - r_mean, 0).astype(np.float64)
        t_std, r_std = float(t[both].std()), float(r[both].std())
        g0 = t_std / r_std if r_std > 0 and t_std > 0 else 1.0
        fill = g0 * r  # where no window is full enough: the whole band's match
        pending = todo.copy()
        weight = both.astype(np.float64)
        rb = np.where(both, r, 0)
        for size in windows:
            n = ndimage.uniform_filter(weight, size, mode="constant")  # the share of the window known in both
            ready = pending & (n * size * size >= min_common - 0.5)
            if not ready.any():
                continue
            n = np.maximum(n, 1e-12)
            mt = ndimage.uniform_filter(t, size, mode="constant") / n
            mr = ndimage.uniform_filter(rb, size, mode="constant") / n
            vt = ndimage.uniform_filter(t * t, size, mode="constant") / n - mt ** 2
            vr = ndimage.uniform_filter(rb * rb, size, mode="constant") / n - mr ** 2
            with np.errstate(divide="ignore", invalid="ignore"):
                gain = np.where(vr > 1e-12 * r_std ** 2, np.sqrt(np.maximum(vt, 0) / vr), g0)
            gain = np.clip(gain, g0 / gain_limit, g0 * gain_limit)
            fill[ready] = (gain * (r - mr) + mt)[ready]
            pending &= ~ready
            if not pending.any():
                break
        out[b][todo] = (fill[todo] + t_mean).astype(np.float32)
        known[b] |= todo
    rest = [b for b in range(len(out)) if not known[b].all()]
    if rest:
        filled = harmonic(np.where(known[rest], out[rest], 0).astype(np.float32), known[rest])
        out[rest] = np.where(known[rest], out[rest], filled)
    return np.where(context, bands, out).astype(np.float32)


# Fills that take another date of the same place as well: (bands, context, reference) -> filled.
TWO_DATE_METHODS = {
    "regression": regression,
    "multiband": multiband,
    "llhm": llhm,
}
