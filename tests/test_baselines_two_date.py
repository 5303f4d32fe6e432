import numpy as np
import pytest

from napari_convnp import baselines, masks, metrics
from napari_convnp.baselines import TWO_DATE_METHODS, llhm


def smooth_scene(c=3, h=96, w=112, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 15.0
    bands = [np.sin(x * (1 + b / 3)) + np.cos(y * (1 + b / 4)) + 0.2 * rng.standard_normal((h, w)) for b in range(c)]
    return (1000 + 300 * np.stack(bands)).astype(np.float32)


def stripes(shape):
    gaps = masks.simulate_slc_off(shape[1:], seed=1, crop_offset=(0, 0))
    assert 0.1 < gaps.mean() < 0.5
    return np.broadcast_to(gaps, shape)


def test_registered():
    assert TWO_DATE_METHODS["llhm"] is llhm


def test_affine_reference_recovers_the_gaps():
    truth = smooth_scene()
    gaps = stripes(truth.shape)
    # Another date that is an exact affine function of this one (per band): what llhm models.
    gains, offsets = np.array([0.5, 1.7, 3.0]), np.array([20.0, -300.0, 0.0])
    reference = (gains[:, None, None] * truth + offsets[:, None, None]).astype(np.float32)
    out = llhm(np.where(gaps, 0, truth), ~gaps, reference)
    assert out.shape == truth.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[~gaps], truth[~gaps])  # known pixels keep their values
    assert np.abs(out - truth)[gaps].max() < 0.05  # on values around 1000 ± 600
    assert metrics.psnr(out, truth, gaps, 2000.0) > 80


def test_reference_with_its_own_gaps():
    truth = smooth_scene(seed=1)
    gaps = stripes(truth.shape)
    reference = 2 * truth + 5
    reference[:, 30:60, 40:80] = np.nan  # the reference's own hole (a cloud, its own stripes)
    reference[1] = np.nan  # a band it does not have at all
    out = llhm(np.where(gaps, 0, truth), ~gaps, reference)
    assert np.isfinite(out).all()
    ref_known = np.isfinite(reference)
    assert np.abs(out - truth)[gaps & ref_known].max() < 0.05
    # Where the reference is unknown too: the single-image harmonic fill of the rest.
    single = baselines.harmonic(np.where(gaps[1:2], 0, truth[1:2]), ~gaps[1:2])
    np.testing.assert_allclose(out[1][gaps[1]], single[0][gaps[1]], rtol=1e-5)
    hole = gaps[0] & ~ref_known[0]
    assert hole.any() and metrics.rmse(out[:1], truth[:1], hole[None]) < 300


def test_local_changes_follow_the_scene():
    """A reference whose level changes across the scene: windowed statistics follow it, a single
    scene-wide match would not."""
    truth = smooth_scene(c=1, h=128, w=128, seed=2)
    gaps = stripes(truth.shape)
    ramp = np.linspace(0.0, 1.0, 128, dtype=np.float32)[None, None, :]
    reference = truth * (1 + ramp) + 500 * ramp  # gain and offset drift from left to right
    out = llhm(np.where(gaps, 0, truth), ~gaps, reference)
    scene_wide = llhm(np.where(gaps, 0, truth), ~gaps, reference, windows=())
    assert metrics.rmse(out, truth, gaps) < 0.25 * metrics.rmse(scene_wide, truth, gaps)


def test_flat_reference_window_does_not_blow_up():
    truth = smooth_scene(c=1, seed=3)
    gaps = stripes(truth.shape)
    reference = truth.copy()
    reference[:, :, :40] = 7.0  # flat (saturated) in part of the scene
    out = llhm(np.where(gaps, 0, truth), ~gaps, reference)
    assert np.isfinite(out).all()
    assert np.abs(out - truth)[gaps].max() < 5 * truth.std()


@pytest.mark.parametrize("mask_name", ["mask_slc1.tif", "mask_slc2.tif"])
def test_real_sts_cnn_patch(data_dir, mask_name):
    """One real pair: llhm lands where the measured five-patch means say (16.7 / 17.0 dB)."""
    from napari_convnp.scene import read_scene

    folder = data_dir / "benchmark" / "sts-cnn"
    truth = read_scene(folder / "patch201_target.tif").bands
    reference = read_scene(folder / "patch201_auxiliary.tif").bands
    gaps = np.broadcast_to(read_scene(folder / mask_name).bands[0] == 0, truth.shape)
    out = llhm(np.where(gaps, 0, truth), ~gaps, reference)
    assert 16.0 < metrics.psnr(out, truth, gaps, 1.0) < 18.5


def test_multiband_follows_a_change_that_differs_from_band_to_band():
    """Each band of the scene a different mix of the other date's bands (a change of season): the multiband fill
    recovers the gaps far better than the one-band regression; known pixels are kept; a reference band that is
    unknown somewhere leaves those pixels to the regression fill."""
    from scipy import ndimage

    rng = np.random.default_rng(4)  # three unrelated textures: no band explains another
    reference = (1000 + 200 * ndimage.gaussian_filter(rng.normal(size=(3, 96, 112)), (0, 3, 3)) / 0.1).astype(
        np.float32)
    mix = np.array([[0.8, 0.3, -0.2], [-0.5, 1.0, 0.4], [0.2, -0.6, 0.9]], np.float32)
    truth = (np.einsum("bc,chw->bhw", mix, reference) + rng.normal(0, 5, reference.shape)).astype(np.float32)
    gaps = stripes(truth.shape)
    given = np.where(gaps, 0, truth)
    multi = TWO_DATE_METHODS["multiband"](given, ~gaps, reference)
    single = baselines.regression(given, ~gaps, reference)
    assert multi.dtype == np.float32 and np.array_equal(multi[~gaps], truth[~gaps])
    assert metrics.rmse(multi, truth, gaps) < metrics.rmse(single, truth, gaps) / 3
    holed = reference.copy()
    holed[1, 30:60, 40:80] = np.nan
    out = baselines.multiband(given, ~gaps, holed)
    hole = np.zeros(truth.shape[1:], bool)
    hole[30:60, 40:80] = True
    np.testing.assert_allclose(out[:, hole], baselines.regression(given, ~gaps, holed)[:, hole])
    rest = gaps & ~hole  # the multiband fill still serves the rest
    assert metrics.rmse(out, truth, rest) < metrics.rmse(single, truth, rest) / 3
