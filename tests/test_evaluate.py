"""The benchmark's building blocks: real cases, scores per method, the README tables."""
import numpy as np

from napari_convnp import masks
from napari_convnp.evaluate import markdown, score_cases, sts_cnn_cases


def test_sts_cnn_cases_are_the_published_patches(data_dir):
    cases = list(sts_cnn_cases(data_dir / "benchmark" / "sts-cnn", "mask_slc1.tif"))
    assert len(cases) == 5
    for name, bands, gaps, data_range in cases:
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
