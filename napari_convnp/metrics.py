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
    squared, count = 0.0, 0
    for p, t in _row_blocks((pred, truth), gaps):
        error = p - t
        squared, count = squared + float(error @ error), count + error.size
    return math.sqrt(squared / count) if count else float("nan")


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
    time with win_size rows of margin each side, block after block: the map is local, and scikit-image's holds about
    fifteen float64 copies of what it is given (~7 GB for a whole 7000×8000 band at once)."""
    h = np.shape(gaps)[0]
    for r0 in range(0, h, SSIM_BLOCK_ROWS):
        a, b = max(0, r0 - win_size), min(h, r0 + SSIM_BLOCK_ROWS + win_size)
        keep = np.zeros(b - a, bool)
        keep[r0 - a:min(h, r0 + SSIM_BLOCK_ROWS) - a] = True
        yield _ssim_block(pred[a:b], truth[a:b], gaps[a:b] & keep[:, None], data_range, win_size)


def _ssim_block(pred, truth, gaps, data_range: float, win_size: int) -> np.ndarray:
    from scipy import ndimage
    from skimage.metrics import structural_similarity

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
    _, full = structural_similarity(t, p, data_range=data_range, win_size=win_size, full=True)
    return full[g]


def gaussian_nll(mean, variance, truth, gaps) -> float:
    """Mean negative log-likelihood per gap pixel, in the data's units; band by band, as `rmse`."""
    def nll(m, v, t):
        return 0.5 * (np.log(2 * np.pi * v) + (t - m) ** 2 / v)

    return _mean_over_gaps(nll, mean, variance, truth, gaps)


def coverage95(mean, variance, truth, gaps) -> float:
    """Fraction of true gap pixels inside the central 95 % predictive interval; band by band, as `rmse`."""
    return _mean_over_gaps(lambda m, v, t: np.abs(t - m) <= Z95 * np.sqrt(v), mean, variance, truth, gaps)


def _mean_over_gaps(per_pixel, mean, variance, truth, gaps) -> float:
    """The mean of per_pixel(mean, variance, truth) over the gap pixels, in float64, BLOCK_ROWS rows of a band in
    memory at a time (mean and variance may be lazy sequences of bands: a result read back from its files)."""
    total, count = 0.0, 0
    for m, v, t in _row_blocks((mean, variance, truth), gaps):
        values = per_pixel(m, v, t)
        total, count = total + float(np.sum(values)), count + values.size
    return total / count if count else float("nan")


def scores(pred, truth, gaps, data_range: float, variance=None) -> dict:
    """All scores for one filled image (C×H×W arrays, gaps True where filled and truth known). `pred` and
    `variance` may be lazy arrays (a result read back from its files): they are read band by band."""
    error = rmse(pred, truth, gaps)
    out = {"psnr": _psnr(error, data_range), "ssim": ssim(pred, truth, gaps, data_range), "rmse": error}
    if variance is not None:
        out["nll"] = gaussian_nll(pred, variance, truth, gaps)
        out["coverage95"] = coverage95(pred, variance, truth, gaps)
    return out
