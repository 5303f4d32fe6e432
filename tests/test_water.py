"""P(water) from a fill: the closed form, band lookup and refusals, the area interval, the `water` command."""
from __future__ import annotations

import json

import numpy as np
import pytest

from napari_convnp import cli
from napari_convnp.errors import OptionError
from napari_convnp.indices import (
    C2_SR_GAIN,
    C2_SR_OFFSET,
    ProbabilityAbove,
    error_correlation,
    index_bands,
    index_variance,
    probability_above,
    reflectance_scale,
)
from napari_convnp.scene import Scene, read_scene
from napari_convnp.water import area_interval, correlated_normals, water_map, water_probability

from .conftest import write_geotiff

OLI_C2 = ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]
ETM = ["ETM+ B1", "ETM+ B2", "ETM+ B3", "ETM+ B4", "ETM+ B5", "ETM+ B61", "ETM+ B62", "ETM+ B7"]


@pytest.mark.parametrize("threshold, rho", [(0.0, 0.0), (0.3, 0.6), (-0.4, -0.5), (0.8, 0.9)])
def test_closed_form_probability_matches_monte_carlo(threshold, rho):
    rng = np.random.default_rng(1)
    mean_a = rng.uniform(0.05, 0.4, 200).astype(np.float32)
    mean_b = rng.uniform(0.05, 0.4, 200).astype(np.float32)
    # spreads up to a quarter of the mean: a + b > 0 in practically every draw, the closed form's domain
    sd_a, sd_b = mean_a * rng.uniform(0.02, 0.25, 200), mean_b * rng.uniform(0.02, 0.25, 200)
    n = 20_000
    za = rng.standard_normal((n, 200))
    zb = rho * za + np.sqrt(1 - rho ** 2) * rng.standard_normal((n, 200))
    a, b = mean_a + sd_a * za, mean_b + sd_b * zb
    sampled = (((a - b) / (a + b)) > threshold).mean(0)
    exact = probability_above(mean_a, mean_b, sd_a ** 2, sd_b ** 2, threshold, rho)
    # the closed form is exact there: what is left is sampling noise
    assert np.abs(exact - sampled).max() < 4 * np.sqrt(0.25 / n) + 1e-3


def test_closed_form_differs_from_ignoring_the_correlation():
    p_independent = probability_above(0.2, 0.18, 0.02 ** 2, 0.02 ** 2, 0.0, 0.0)
    p_correlated = probability_above(0.2, 0.18, 0.02 ** 2, 0.02 ** 2, 0.0, 0.9)
    assert p_correlated > p_independent + 0.1  # shared errors cancel in the difference: surer


def test_delta_method_index_spread_matches_monte_carlo_for_small_spreads():
    rng = np.random.default_rng(2)
    a = 0.3 + 0.01 * rng.standard_normal(200_000)
    b = 0.1 + 0.005 * rng.standard_normal(200_000)
    sampled = np.var((a - b) / (a + b))
    assert index_variance(0.3, 0.1, 0.01 ** 2, 0.005 ** 2) == pytest.approx(sampled, rel=0.05)


def test_known_pixels_are_zero_or_one_and_unknown_pixels_nan():
    mean = np.array([[[0.3, 0.1, np.nan]], [[0.1, 0.3, 0.2]]], np.float32)  # bands a, b
    variance = np.zeros_like(mean)
    prob = water_probability(mean, variance, index_bands("B1,B2", ["B1", "B2"]), 0.0)
    assert prob[0, :2].tolist() == [1.0, 0.0] and np.isnan(prob[0, 2])


def test_a_higher_threshold_never_raises_the_probability():
    rng = np.random.default_rng(3)
    mean = rng.uniform(0.05, 0.4, (2, 50, 50)).astype(np.float32)
    variance = rng.uniform(0, 0.01, (2, 50, 50)).astype(np.float32)
    bands = index_bands("B1,B2", ["B1", "B2"])
    probs = [water_probability(mean, variance, bands, t, band_correlation=0.5) for t in (-0.5, 0.0, 0.2, 0.7)]
    assert all((hi <= lo + 1e-6).all() for lo, hi in zip(probs, probs[1:]))


def test_water_bands_are_found_by_sensor_and_name():
    assert (index_bands(None, OLI_C2, "LC09_L2SP_x.tif").a, index_bands(None, OLI_C2, "LC09_L2SP_x.tif").b) == (1, 4)
    etm = index_bands(None, ETM, "LE07_x.tif")
    assert (etm.name, etm.a, etm.b) == ("mndwi", 1, 4)
    ndwi = index_bands(None, ["B2", "B3", "B4"], "LE07_x.tif")  # green, red, NIR: no SWIR1
    assert (ndwi.name, ndwi.a, ndwi.b) == ("ndwi", 0, 2)
    ndvi = index_bands("ndvi", ETM, "LE07_x.tif")
    assert (ndvi.a, ndvi.b) == (3, 2)
    named = index_bands("B3,B5", ["ETM+ B3 red", "ETM+ B4 NIR", "ETM+ B5 SWIR1"])
    assert (named.a, named.b) == (0, 2)


@pytest.mark.parametrize("index, names, problem", [
    (None, ["ETM+ B3 red", "ETM+ B4 NIR", "ETM+ B5 SWIR1"], "no green"),
    ("B2,B9", ["B1", "B2", "B3"], "'b9' is not among the bands"),
    ("mndwi", ["B1", "B2", "B3", "B4"], "needs the swir1 band"),
    ("B2,b2", ["B1", "B2", "B3"], "one band twice"),
    ("water", ["B1", "B2"], "unknown index"),
])
def test_missing_bands_are_refused_by_name(index, names, problem):
    with pytest.raises(OptionError, match=problem):
        index_bands(index, names)


@pytest.mark.parametrize("threshold", [1.5, -1.01, float("nan"), "0.2"])
def test_a_threshold_outside_the_index_range_is_refused(threshold):
    with pytest.raises(OptionError, match=r"\[-1, 1\]"):
        probability_above(0.2, 0.1, 0.0, 0.0, threshold)


def test_the_closed_form_prepared_once_gives_at_each_threshold_what_a_fresh_one_gives():
    rng = np.random.default_rng(4)
    mean_a, mean_b = rng.uniform(-0.05, 0.4, (2, 40, 50)).astype(np.float32)  # some sums below 0: turned round
    mean_a[0, :5] = np.nan
    var_a, var_b = np.where(rng.random((2, 40, 50)) < 0.3, rng.uniform(0, 0.01, (2, 40, 50)), 0).astype(np.float32)
    prepared = ProbabilityAbove(mean_a, mean_b, var_a, var_b, 0.4)
    for threshold in (-0.6, 0.0, 0.35, 0.9):
        fresh = probability_above(mean_a, mean_b, var_a, var_b, threshold, 0.4)
        np.testing.assert_array_equal(prepared(threshold), fresh)
    known = (var_a + var_b == 0) & np.isfinite(mean_a)
    assert np.isnan(prepared(0.0)[0, :5]).all() and np.isin(prepared(0.2)[known], (0.0, 1.0)).all()


def test_collection2_surface_reflectance_is_scaled_and_other_products_are_not(tmp_path):
    def scene(name, dtype):
        return Scene(np.zeros((1, 1, 1), np.float32), ["SR_B3"], np.zeros((1, 1, 1), bool), source_dtype=dtype,
                     path=tmp_path / name)

    assert reflectance_scale(scene("LC08_L2SP_204023_stack.tif", "uint16")) == (C2_SR_GAIN, C2_SR_OFFSET)
    assert reflectance_scale(scene("LC08_L1TP_204023_stack.tif", "uint16")) == (1.0, 0.0)
    assert reflectance_scale(scene("LC08_L2SP_204023_scaled.tif", "float32")) == (1.0, 0.0)  # already scaled


def test_the_offset_of_collection2_changes_which_pixels_are_water():
    # DN 9000 and 8000: as DN green > SWIR1 by 6 %; as reflectance 0.0475 > 0.02 by far more
    mean = np.array([9000, 8000], np.float32).reshape(2, 1, 1)
    bands = index_bands("B1,B2", ["B1", "B2"])
    as_dn = water_probability(mean, None, bands, 0.3)
    as_reflectance = water_probability(mean, None, bands, 0.3, scale=(C2_SR_GAIN, C2_SR_OFFSET))
    assert (as_dn.item(), as_reflectance.item()) == (0.0, 1.0)


def test_band_error_correlation_is_recovered_from_known_pixels():
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:200, 0:200] / 50.0
    shared = rng.standard_normal((200, 200))
    a = 0.2 + 0.05 * np.sin(x) + 0.01 * shared
    b = 0.1 + 0.05 * np.cos(y) + 0.01 * (0.7 * shared + np.sqrt(1 - 0.49) * rng.standard_normal((200, 200)))
    known = rng.random((200, 200)) > 0.2
    assert error_correlation(a, b, known) == pytest.approx(0.7, abs=0.05)


def test_correlated_field_has_unit_variance_and_the_asked_correlation():
    rng = np.random.default_rng(5)
    rows, cols = (g.ravel().astype(np.float32) for g in np.mgrid[0:120, 0:120])
    fields = np.array([correlated_normals(rows, cols, 6.0, rng).reshape(120, 120) for _ in range(60)])
    assert fields.var() == pytest.approx(1.0, abs=0.1)
    lag6 = np.corrcoef(fields[:, :, :-6].ravel(), fields[:, :, 6:].ravel())[0, 1]
    assert lag6 == pytest.approx(np.exp(-0.5), abs=0.06)


def test_area_interval_covers_the_truth_when_errors_are_spatially_correlated():
    """Truths drawn as the model says (P per pixel, errors shared over 6 pixels): the 95 % interval holds them
    about 95 % of the time; treating the pixels as independent covers far less."""
    rng = np.random.default_rng(6)
    shape, length = (60, 60), 6.0
    filled = np.zeros(shape, bool)
    filled[::8] = filled[1::8] = filled[2::8] = True  # stripes, as SLC-off gaps
    y, x = np.mgrid[0:60, 0:60]
    prob = np.where(filled, 1 / (1 + np.exp(-(x - 30) / 6.0)), (x > 30).astype(float)).astype(np.float32)
    rows, cols = (g[filled].astype(np.float32) for g in np.mgrid[0:60, 0:60])
    from scipy.special import ndtri

    covered, covered_independent = [], []
    for trial in range(40):
        latent = correlated_normals(rows, cols, length, rng)
        truth = (prob[~filled] > 0.5).sum() + (latent < ndtri(prob[filled])).sum()
        area = area_interval(prob, filled, length=length, draws=100, seed=trial, calibration_error=0)
        independent = area_interval(prob, filled, length=0, draws=100, seed=trial, calibration_error=0)
        covered.append(area.low <= truth <= area.high)
        covered_independent.append(independent.low <= truth <= independent.high)
        assert area.known == (prob[~filled] > 0.5).sum()
    assert np.mean(covered) >= 0.85
    assert np.mean(covered_independent) < np.mean(covered) - 0.2


def test_calibration_bound_widens_by_the_error_per_filled_pixel_within_the_possible():
    prob = np.full((10, 10), 0.5, np.float32)
    filled = np.zeros((10, 10), bool)
    filled[:, :4] = True  # 40 filled pixels; 60 known, none water (P 0.5 there counts as not water)
    prob[~filled] = 0
    sampled = area_interval(prob, filled, length=0, calibration_error=0)
    bounded = area_interval(prob, filled, length=0, calibration_error=0.1)
    assert bounded.sampled == (sampled.low, sampled.high)
    assert (bounded.low, bounded.high) == (max(0, sampled.low - 4), min(40, sampled.high + 4))
    whole = area_interval(prob, filled, length=0, calibration_error=1.0)
    assert (whole.low, whole.high) == (0, 40)


def test_water_map_of_arrays_counts_only_the_index_bands_mask_as_filled():
    mean = np.full((6, 4, 4), 0.2, np.float32)
    variance = np.zeros((6, 4, 4), np.float32)
    gaps = np.zeros((6, 4, 4), bool)
    gaps[0, 0, 0] = True  # band 1: not one of MNDWI's
    gaps[1, 1, 1] = True  # green
    variance[1, 1, 1] = 0.01
    water = water_map(mean, variance, gaps, OLI_C2, product="LC08_L2SP_x.tif", band_correlation=0.0)
    assert water.filled.sum() == 1 and water.filled[1, 1]
    assert 0 < water.probability[1, 1] < 1


# --- the command line ---------------------------------------------------------------------------------

@pytest.fixture
def water_scene(tmp_path):
    """A 6-band 30 m reflectance-like scene (×1e4): a lake on the left (green > SWIR1), land on the right,
    and a mask of stripes."""
    y, x = np.mgrid[0:64, 0:64]
    lake = x < 28 + 4 * np.sin(y / 6)
    green = np.where(lake, 600, 900) + 30 * np.sin(y / 5)
    swir1 = np.where(lake, 100, 2000) + 40 * np.cos(x / 7)
    bands = np.stack([green * 0.8, green, green * 1.1, np.where(lake, 200, 2800), swir1, swir1 * 0.7])
    scene = write_geotiff(tmp_path / "lake.tif", bands.astype(np.uint16))
    stripes = np.zeros((64, 64), np.uint8)
    stripes[(y % 12) < 3] = 1
    mask = write_geotiff(tmp_path / "stripes.tif", stripes[None])
    return scene, mask, lake, stripes.astype(bool)


@pytest.mark.slow
def test_water_command_writes_georeferenced_probability_and_a_summary(tmp_path, water_scene, capsys):
    scene, mask, lake, stripes = water_scene
    out = tmp_path / "water.tif"
    code = cli.main(["water", str(scene), "--out", str(out), "--mask", str(mask), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    written, source = read_scene(out), read_scene(scene)
    assert written.shape == (1, 64, 64) and written.source_dtype == "float32"
    assert all(written.geo_tags.get(tag) == source.geo_tags.get(tag) for tag in (33550, 33922, 34735))
    prob = written.bands[0]
    assert ((prob >= 0) & (prob <= 1)).all()
    assert (prob[~stripes] == lake[~stripes]).all()  # known pixels: exactly water or not
    assert (prob[stripes & lake] > 0.5).mean() > 0.9 and (prob[stripes & ~lake] < 0.5).mean() > 0.9
    pixel_km2 = 0.03 ** 2
    low, high = summary["water_km2_95"]
    assert low <= summary["water_km2"] <= high
    assert low <= lake.sum() * pixel_km2 <= high
    assert summary["water_known_km2"] == pytest.approx((lake & ~stripes).sum() * pixel_km2, rel=1e-6)
    assert summary["filled_share"] == pytest.approx(stripes.mean(), abs=1e-4)
    assert summary["index"] == "mndwi" and summary["threshold"] == 0.0


def test_water_command_says_a_reference_of_elsewhere_on_stderr_and_in_the_summary(tmp_path, water_scene, capsys):
    """Issue 25.4, as `fill` says it: the water map of a scene filled from a date of another place."""
    scene, mask, _, _ = water_scene
    noise = np.random.default_rng(0).uniform(100, 3000, (6, 64, 64)).astype(np.uint16)
    elsewhere = write_geotiff(tmp_path / "elsewhere.tif", noise)
    code = cli.main(["water", str(scene), "--out", str(tmp_path / "water.tif"), "--mask", str(mask),
                     "--method", "regression", "--reference", str(elsewhere)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    [note] = json.loads(captured.out)["notes"]
    assert note.startswith("reference elsewhere.tif predicts the scene poorly where both are known")
    assert f"napari-convnp: note: {note}" in captured.err.splitlines()


@pytest.mark.parametrize("extra, problem", [
    (["--index", "B2,B9"], "'b9' is not among the bands"),
    (["--threshold", "1.5"], "[-1, 1]"),
    (["--index", "nope"], "unknown index"),
])
def test_water_command_refuses_bad_index_or_threshold_in_one_line(tmp_path, water_scene, capsys, extra, problem):
    scene, mask, *_ = water_scene
    out = tmp_path / "water.tif"
    code = cli.main(["water", str(scene), "--out", str(out), "--mask", str(mask), "--method", "idw", *extra])
    err = capsys.readouterr().err
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_water_command_refuses_a_scene_without_water_bands(tmp_path, capsys):
    scene = write_geotiff(tmp_path / "rgb.tif", np.full((3, 16, 16), 500, np.uint16))
    mask = write_geotiff(tmp_path / "m.tif", np.eye(16, dtype=np.uint8)[None])
    code = cli.main(["water", str(scene), "--out", str(tmp_path / "w.tif"), "--mask", str(mask)])
    err = capsys.readouterr().err
    assert code == 2 and "no green and SWIR1" in err and len(err.strip().splitlines()) == 1


def test_water_command_with_a_classical_fill_gives_a_hard_map_and_no_interval(tmp_path, water_scene, capsys):
    scene, mask, *_ = water_scene
    out = tmp_path / "water.tif"
    code = cli.main(["water", str(scene), "--out", str(out), "--mask", str(mask), "--method", "idw"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["water_km2_95"] is None and summary["water_km2"] > 0
    assert set(np.unique(read_scene(out).bands)) <= {0.0, 1.0}
