"""Scores on the gap pixels only: PSNR, SSIM, RMSE, Gaussian NLL, 95 % interval coverage."""
from __future__ import annotations

import math

import numpy as np

SSIM_BLOCK_ROWS = 256  # see _ssim_blocks: about 0.3 GB at 8000 columns
BLOCK_ROWS = 1024  # the other scores read a band this many rows at a time: a streamed result's blocks (`lazy_image`)

Z95 = 1.959964


def _row_blocks(arrays, gaps):
    """Per band, per block of BLOCK_ROWS rows: (the arrays' values at its gap pixels as float64, ...): a band of a
    whole scene (a result read back from its file, perhaps) is never read whole, nor its gap values held at once."""
    for band in zip(*arrays, gaps):
        *values, g = band
        for r0 in range(0, np.shape(g)[0], BLOCK_ROWS):
            here = np.asarray(g[r0:r0 + BLOCK_ROWS], bool)
            if here.any():
                yield [np.asarray(v[r0:r0 + BLOCK_ROWS])[here].astype(np.float64) for v in values]


def rmse(pred, truth, gaps) -> float:
    """Band by band: `pred` may be a lazy sequence of bands (a result read back from its file)."""
    return math.sqrt(_means_over_gaps({"se": _squared_error}, (pred, truth), gaps)["se"])


def psnr(pred, truth, gaps, data_range: float) -> float:
    return _psnr(rmse(pred, truth, gaps), data_range)


def _psnr(error: float, data_range: float) -> float:
    return float(20 * math.log10(data_range / max(error, 1e-12)))


def ssim(pred, truth, gaps, data_range: float, win_size: int = 7) -> float:
    """Mean of the local SSIM map over the gap pixels, band by band.

    Only windows free of nodata count: a gap pixel whose `win_size`² window (the window SSIM is computed
    over, mirrored at the image edge) touches a pixel that is NaN in the prediction or the truth is left
    out, so no-data pixels never enter a score. On images without any NaN this is the plain windowed SSIM.
    NaN when no gap pixel has a nodata-free window.
    """
    total, count = 0.0, 0
    for p, t, g in zip(pred, truth, gaps):
        for values in _ssim_blocks(p, t, g, data_range, win_size):
            total, count = total + float(np.sum(values)), count + values.size
    return total / count if count else float("nan")


def _ssim_blocks(pred, truth, gaps, data_range: float, win_size: int = 7):
    """One band's local SSIM at its gap pixels with a nodata-free window (see `ssim`), SSIM_BLOCK_ROWS rows at a
    time with win_size rows of margin each side, block after block: the map is local, and its window sums hold
    about a dozen float64 copies of a block. The band is read BLOCK_ROWS rows at a time (a streamed result's blocks:
    each decoded once)."""
    h = np.shape(gaps)[0]
    for s0 in range(0, h, BLOCK_ROWS):
        s1 = min(h, s0 + BLOCK_ROWS)
        first, last = max(0, s0 - win_size), min(h, s1 + win_size)
        p, t, g = (np.asarray(x[first:last]) for x in (pred, truth, gaps))
        for r0 in range(s0, s1, SSIM_BLOCK_ROWS):
            a, b = max(0, r0 - win_size), min(last, r0 + SSIM_BLOCK_ROWS + win_size)
            keep = np.zeros(b - a, bool)
            keep[r0 - a:min(s1, r0 + SSIM_BLOCK_ROWS) - a] = True
            rows = slice(a - first, b - first)
            yield _ssim_block(p[rows], t[rows], g[rows] & keep[:, None], data_range, win_size)


def _ssim_block(pred, truth, gaps, data_range: float, win_size: int) -> np.ndarray:
    """scikit-image's local SSIM map (`structural_similarity(truth, pred, full=True)` with its defaults: a uniform
    win_size² window mirrored at the edges, the sample covariance, K1 0.01, K2 0.03), at the gap pixels only: the
    five window means over the block, the rest of the formula only where it is read (2× faster on a scene's gaps)."""
    from scipy import ndimage

    if not gaps.any():
        return np.zeros(0)
    p, t, g = np.asarray(pred, np.float64), np.asarray(truth, np.float64), gaps
    missing = ~np.isfinite(p) | ~np.isfinite(t)
    if missing.any():
        # Those windows are dropped below; the values put here only keep the filter arithmetic finite.
        g = g & ~ndimage.maximum_filter(missing, size=win_size, mode="reflect")
        if not g.any():
            return np.zeros(0)
        p, t = np.where(missing, 0.0, p), np.where(missing, 0.0, t)
    ux, uy, uxx, uyy, uxy = (ndimage.uniform_filter(x, size=win_size)[g] for x in (t, p, t * t, p * p, t * p))
    cov_norm = win_size ** 2 / (win_size ** 2 - 1)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))


def _squared_error(m, t, *_):
    return (t - m) ** 2


def _nll(m, t, v):
    return 0.5 * (np.log(2 * np.pi * v) + (t - m) ** 2 / v)


def _inside95(m, t, v):
    return np.abs(t - m) <= Z95 * np.sqrt(v)


def gaussian_nll(mean, variance, truth, gaps) -> float:
    """Mean negative log-likelihood per gap pixel, in the data's units; band by band, as `rmse`."""
    return _means_over_gaps({"nll": _nll}, (mean, truth, variance), gaps)["nll"]


def coverage95(mean, variance, truth, gaps) -> float:
    """Fraction of true gap pixels inside the central 95 % predictive interval; band by band, as `rmse`."""
    return _means_over_gaps({"coverage95": _inside95}, (mean, truth, variance), gaps)["coverage95"]


def _means_over_gaps(per_pixel: dict, arrays, gaps) -> dict:
    """The mean of each per_pixel(*values of arrays) over the gap pixels, in float64, in one pass reading BLOCK_ROWS
    rows of a band at a time (the arrays may be lazy sequences of bands: a result read back from its files)."""
    totals, count = dict.fromkeys(per_pixel, 0.0), 0
    for values in _row_blocks(arrays, gaps):
        for key, function in per_pixel.items():
            totals[key] += float(np.sum(function(*values)))
        count += values[0].size
    return {key: total / count if count else float("nan") for key, total in totals.items()}


def scores(pred, truth, gaps, data_range: float, variance=None) -> dict:
    """All scores for one filled image (C×H×W arrays, gaps True where filled and truth known). `pred` and
    `variance` may be lazy arrays (a result read back from its files): they are read band by band, once for the
    SSIM and once for the rest."""
    per_pixel, arrays = {"se": _squared_error}, (pred, truth)
    if variance is not None:
        per_pixel, arrays = per_pixel | {"nll": _nll, "coverage95": _inside95}, (pred, truth, variance)
    means = _means_over_gaps(per_pixel, arrays, gaps)
    error = math.sqrt(means.pop("se"))
    return {"psnr": _psnr(error, data_range), "ssim": ssim(pred, truth, gaps, data_range), "rmse": error} | means
