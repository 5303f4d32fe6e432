"""Several references fused with weights that vary in space, their ranking, and the stack fill (fusion.py)."""
from __future__ import annotations

import numpy as np
import pytest

from napari_convnp.errors import FillError, OptionError
from napari_convnp.fusion import fuse_references, rank_references
from napari_convnp.inpaint import fill
from napari_convnp.reference import merge_references
from napari_convnp.stack_fill import fill_stack

from .test_inpaint import smooth_bands, stripes


def texture(c=2, h=96, w=128, seed=0) -> np.ndarray:
    """Smooth structure plus a fine texture that no single-image fill can guess inside a stripe."""
    rng = np.random.default_rng(seed)
    return smooth_bands(c, h, w) + np.cumsum(rng.normal(size=(c, h, w)), axis=2).astype(np.float32) * 10


def test_each_half_takes_the_reference_that_predicts_it_there():
    """A reference that is a linear function of the target in the left half and noise in the right, and another
    the other way round: the fused reference follows the good one in each half."""
    target = texture()
    rng = np.random.default_rng(1)
    noise = rng.normal(500, 100, target.shape).astype(np.float32)
    left = np.zeros(target.shape[1:], bool)
    left[:, :64] = True
    a = np.where(left, 2 * target + 1, noise)
    b = np.where(left, noise[:, ::-1], 0.5 * target - 3)
    known = ~stripes()
    given = np.where(known, target, np.nan)
    fused = fuse_references(given, known, [a, b])
    alone = [fuse_references(given, known, [r]).reference for r in (a, b)]  # each one's local fit alone
    for half, good, bad in ((slice(4, 36), 0, 1), (slice(92, 124), 1, 0)):  # away from where the halves meet
        holes = np.zeros_like(known)
        holes[:, half] = ~known[:, half]
        error = [float(np.abs(r - target)[:, holes].mean()) for r in (fused.reference, *alone)]
        assert error[0] < 1.3 * error[1 + good] and error[0] < 0.3 * error[1 + bad], error
    assert 0.4 < fused.weights[0] < 0.6 and abs(sum(fused.weights) - 1) < 1e-5
    assert (fused.variance >= fused.spread).all() and np.isfinite(fused.variance).all()
    # a pixel no reference knows stays unknown, and one that shares no known pixel with the target has no say
    a[:, :5, :5] = b[:, :5, :5] = np.nan
    assert np.isnan(fuse_references(target, known, [a, b]).reference[:, :5, :5]).all()
    elsewhere = np.where(known, np.nan, noise)
    assert np.isnan(fuse_references(given, known, [elsewhere]).reference).all()
    np.testing.assert_allclose(fuse_references(given, known, [a, b, elsewhere]).reference,
                               fuse_references(given, known, [a, b]).reference, rtol=1e-6)


def test_ranking_prefers_dates_that_know_the_holes_are_near_and_predict_the_target():
    target = texture(seed=2)
    hole = np.zeros(target.shape[1:], bool)
    hole[30:60, 40:90] = True
    noise = np.random.default_rng(3).normal(500, 100, target.shape).astype(np.float32)
    bands = [target, 1.5 * target + 7, noise, 0.8 * target, 0.8 * target]
    known = [~hole, np.ones_like(hole), np.ones_like(hole), np.ones_like(hole), ~hole]
    dates = ["2010-06-01", "2010-06-11", "2010-06-05", "2012-06-03", "2010-06-02"]
    # date 4 knows none of the hole; date 2 is nearer than date 1 but predicts nothing; date 3 is two years away
    assert rank_references(known, dates, 0, 3, bands=bands) == [1, 3, 2]
    assert rank_references(known, dates, 0, 1, bands=bands) == [1]
    # without the pixels, time decides among the dates that know the hole
    assert rank_references(known, dates, 0, 3) == [2, 1, 3]


def _reference_model():
    from napari_convnp.model import load_model

    return load_model()


@pytest.mark.slow
def test_two_references_beat_the_first_come_merge():
    """The first reference is another place in the right half; the second matches there. First come takes the
    first wherever it is known; the fusion weighs the second where it predicts the scene."""
    bands = texture(seed=4)
    gaps = stripes()
    rng = np.random.default_rng(5)
    first = 0.7 * bands + 20
    first[:, :, 64:] = texture(seed=6)[:, :, 64:]  # another place there
    second = 1.2 * bands - 30 + rng.normal(0, 3, bands.shape).astype(np.float32)
    second[:, :20] = np.nan  # knows less than the first: first come would keep the first everywhere
    model = _reference_model()
    fused = fill(bands, gaps, reference=[first, second], model=model, device="cpu")
    first_come = fill(bands, gaps, reference=merge_references([first, second]), model=model, device="cpu")
    rmse = {name: float(np.sqrt(np.mean((r.mean - bands)[:, gaps] ** 2)))
            for name, r in (("fused", fused), ("first come", first_come))}
    assert rmse["fused"] < 0.7 * rmse["first come"], rmse


@pytest.mark.slow
def test_a_cloud_in_a_reference_does_not_brighten_the_fill():
    """A bright cloud over the target's stripes on the only other date: marked unusable, it is never context, so
    the fill is the same whatever the cloud holds, and no brighter than the ground."""
    truth = texture(seed=7)
    gaps = stripes()
    target = np.where(gaps, np.nan, truth)
    other = 0.9 * truth + 10
    cloud = np.zeros(gaps.shape, bool)
    cloud[20:70, 30:100] = True
    model = _reference_model()

    def fill_under(cloud_values):
        under = np.where(cloud, cloud_values, other)
        result = fill_stack([target, under], [np.zeros_like(cloud), cloud], ["2010-06-01", "2010-06-09"],
                            targets=[0], model=model, device="cpu")[0]
        return result.fill.mean

    bright = fill_under(5000.0)  # far brighter than the ground (about 300-700)
    assert np.array_equal(bright, fill_under(np.random.default_rng(8).normal(3e4, 1e4, other.shape)))
    hole = gaps & cloud
    assert abs(float(bright[:, hole].mean() - truth[:, hole].mean())) < 15


@pytest.mark.slow
def test_stack_fill_reports_references_and_keeps_clouds_unless_asked():
    truth = [texture(seed=s) for s in (8, 9, 10)]
    gaps = stripes()
    cloud = np.zeros(gaps.shape, bool)
    cloud[10:30, 10:40] = True
    bands = [np.where(gaps, np.nan, truth[0]) + np.where(cloud, 900, 0), 1.1 * truth[0], 0.9 * truth[0] + 5]
    bands = [b.astype(np.float32) for b in bands]
    unusable = [cloud, np.zeros_like(cloud), np.zeros_like(cloud)]
    dates = ["2011-01-01", "2011-01-17", "2011-02-02"]
    kept, = fill_stack(bands, unusable, dates, targets=[0], max_references=2, device="cpu")
    assert [i for i, _ in kept.references] == [1, 2] and abs(sum(w for _, w in kept.references) - 1) < 1e-5
    seen = cloud & ~gaps  # the cloud's pixels that have values (under the stripes it is a hole like the others)
    assert np.array_equal(kept.fill.mean[:, seen], bands[0][:, seen])  # kept as it is
    assert (kept.fill.variance[:, seen] == 0).all() and (kept.fill.variance[:, gaps] > 0).all()
    filled, = fill_stack(bands, unusable, dates, targets=[0], max_references=2, fill_clouds=True, device="cpu")
    assert np.abs(filled.fill.mean - truth[0])[:, seen].mean() < 30
    assert np.isfinite(filled.fill.mean).all()


@pytest.mark.parametrize("args, kwargs, error, message", [
    (([], [], []), {}, FillError, "empty"),
    (([np.ones((1, 4, 4))] * 2, [np.zeros((4, 4), bool)] * 2, ["2010-01-01"] * 2), {}, FillError, "twice"),
    (([np.ones((1, 4, 4))] * 2, [np.zeros((4, 4), bool)], ["2010-01-01", "2010-01-02"]), {}, FillError, "one each"),
    (([np.ones((1, 4, 4))] * 2, [np.zeros((4, 4), bool)] * 2, ["2010-01-01", "2010-01-02"]),
     {"max_references": 0}, OptionError, "max_references"),
    (([np.ones((1, 4, 4))] * 2, [np.zeros((4, 4), bool)] * 2, ["2010-01-01", "June"]), {}, FillError, "June"),
    (([np.ones((1, 4, 4))] * 2, [np.zeros((4, 4), bool)] * 2, ["2010-01-01", "2010-01-02"]), {"targets": [2]},
     FillError, "target 2"),
    (([np.ones((1, 4, 4)), np.ones((1, 4, 5))], [np.zeros((4, 4), bool)] * 2, ["2010-01-01", "2010-01-02"]), {},
     FillError, "2010-01-02"),
])
def test_bad_stacks_are_named(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        fill_stack(*args, **kwargs)


def test_several_reference_files_are_fused_on_the_scene(tmp_path):
    """References given as files are aligned and fused window by window, as arrays are."""
    from napari_convnp.scene import read_scene

    from .conftest import write_geotiff

    bands = texture(seed=11)
    gaps = stripes()
    first, second = 0.7 * bands + 20, 1.2 * bands - 30
    first[:, :, 64:] = np.nan
    paths = [write_geotiff(tmp_path / f"{name}.tif", ref.astype(np.float32))
             for name, ref in (("first", first), ("second", second))]
    scene = read_scene(write_geotiff(tmp_path / "scene.tif", bands.astype(np.float32)))
    hidden = np.where(gaps, np.nan, bands)
    from_files = fill(hidden, gaps, method="regression", reference=paths, scene=scene)
    from_arrays = fill(hidden, gaps, method="regression", reference=[first, second])
    np.testing.assert_allclose(from_files.mean, from_arrays.mean, rtol=1e-5)
    assert np.abs(from_files.mean - bands)[:, gaps].mean() < 0.1 * np.abs(bands - bands.mean()).mean()


def test_a_spread_kept_only_at_the_holes_gives_back_its_rows():
    """The fused references' spread is kept at the holes only (a whole target's worth of memory less): rows come
    back as they were there, 0 elsewhere and where it was NaN (no reference knew the pixel)."""
    from napari_convnp.stack_fill import AtHoles

    rng = np.random.default_rng(4)
    spread = rng.random((3, 37, 29)).astype(np.float32)
    spread[1, 5:9, 3:7] = np.nan
    holes = rng.random(spread.shape) < 0.3
    holes[2] = False  # a band with nothing to fill
    kept = AtHoles(spread, holes)
    expected = np.where(holes & np.isfinite(spread), spread, 0)
    for r0, r1 in [(0, 37), (0, 1), (5, 9), (36, 37), (10, 10), (3, 30)]:
        np.testing.assert_array_equal(kept.rows(r0, r1), expected[:, r0:r1], err_msg=f"rows {r0}:{r1}")
    assert sum(v.nbytes for v in kept.values) == 4 * holes.sum()


def test_only_the_parts_asked_for_are_made():
    """A fill from several references needs only the fused reference, a stack's target its spread too: the variance
    (a scene's worth of memory each) is not made where not asked for; what is made is the same."""
    rng = np.random.default_rng(5)
    target = rng.random((2, 30, 26)).astype(np.float32)
    known = rng.random(target.shape[1:]) < 0.7
    refs = [target * 1.1 + 0.05 * rng.random(target.shape).astype(np.float32) for _ in range(2)]
    whole = fuse_references(target, known, refs)
    some = fuse_references(target, known, refs, parts=("reference", "spread"))
    assert some.variance is None
    np.testing.assert_array_equal(some.reference, whole.reference)
    np.testing.assert_array_equal(some.spread, whole.spread)
    assert some.weights == whole.weights
