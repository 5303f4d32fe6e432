"""SSIM over nodata-free windows (issue 12, point 1): finite on scenes with nodata, unchanged without."""
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from napari_convnp import metrics


def _data(seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.random((2, 64, 80))
    pred = truth + 0.1 * rng.standard_normal(truth.shape)
    gaps = np.zeros(truth.shape, bool)
    gaps[:, 10:16] = True
    gaps[:, 40:44, 5:70] = True
    return pred, truth, gaps


def test_unchanged_without_nodata():
    pred, truth, gaps = _data()
    plain = np.mean(np.concatenate([structural_similarity(t, p, data_range=1.0, full=True)[1][g]
                                    for p, t, g in zip(pred, truth, gaps)]))
    assert metrics.ssim(pred, truth, gaps, 1.0) == pytest.approx(plain, rel=1e-12)  # summed block by block


def test_ssim_in_blocks_of_rows_is_the_ssim_of_the_whole(monkeypatch):
    """A whole scene's band is scored a block of rows at a time (memory): the local SSIM map does not change."""
    pred, truth, gaps = _data(3)
    truth[1, 30, 20] = np.nan  # a nodata pixel near a block's edge
    whole = metrics.ssim(pred, truth, gaps, 1.0)
    monkeypatch.setattr(metrics, "SSIM_BLOCK_ROWS", 13)
    assert metrics.ssim(pred, truth, gaps, 1.0) == pytest.approx(whole, rel=1e-12)
    monkeypatch.setattr(metrics, "BLOCK_ROWS", 29)  # read 29 rows at a time, scored 13 at a time (and the rest)
    assert metrics.ssim(pred, truth, gaps, 1.0) == pytest.approx(whole, rel=1e-12)


def test_windows_touching_nodata_are_left_out():
    pred, truth, gaps = _data(1)
    truth[:, 60:, :] = np.nan  # off-scene rows, far from some gaps, next to none
    truth[0, 12, 30] = np.nan  # one nodata pixel inside a gap stripe
    score = metrics.ssim(pred, truth, gaps, 1.0)
    assert np.isfinite(score)
    # the same windows with any values put in the nodata pixels give the same score: they never enter it
    for fill_value in (0.0, 0.7):
        t = np.where(np.isnan(truth), fill_value, truth)
        kept = []
        for p, tt, g, bad in zip(pred, t, gaps, np.isnan(truth)):
            from scipy import ndimage

            usable = g & ~ndimage.maximum_filter(bad, size=7, mode="reflect")
            kept.append(structural_similarity(tt, p, data_range=1.0, full=True)[1][usable])
        assert score == pytest.approx(np.mean(np.concatenate(kept)), rel=1e-12)  # running sums round a little
    # the old scoring spread the NaN across the whole image
    naive = structural_similarity(truth[0], pred[0], data_range=1.0, full=True)[1]
    assert np.isnan(naive[gaps[0]]).mean() > 0.5


def test_nan_in_the_prediction_counts_as_nodata_and_no_window_left_is_nan():
    pred, truth, gaps = _data(2)
    pred[1, :, :] = np.nan
    assert np.isfinite(metrics.ssim(pred, truth, gaps, 1.0))
    assert np.isnan(metrics.ssim(pred[1:], truth[1:], gaps[1:], 1.0))


def test_nll_and_coverage_are_the_same_over_bands_read_one_at_a_time():
    """The widget scores a streamed result, read back band by band, as one in memory (issue 25, item 7)."""
    pred, truth, gaps = _data(3)
    variance = np.full(truth.shape, 0.01) * np.linspace(0.5, 2, truth.shape[-1])
    m, v, t = pred[gaps], variance[gaps], truth[gaps]
    whole_nll = np.mean(0.5 * (np.log(2 * np.pi * v) + (t - m) ** 2 / v))
    whole_coverage = np.mean(np.abs(t - m) <= metrics.Z95 * np.sqrt(v))
    lazy = (list(pred), list(variance))  # sequences of bands, as a dask array read back from files
    assert metrics.gaussian_nll(*lazy, truth, gaps) == pytest.approx(whole_nll, rel=1e-12)
    assert metrics.coverage95(*lazy, truth, gaps) == whole_coverage
    assert 0.5 < whole_coverage < 1
