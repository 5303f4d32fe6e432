"""`fill_stack` on an xarray DataArray (stack_xarray.py): coordinates kept, lazy on Dask, chunks blended without
seams, bad input named in one line."""
from __future__ import annotations

import sys

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
dask = pytest.importorskip("dask")
import dask.array as dsa  # noqa: E402

from napari_convnp.errors import ConvNPError, FillError  # noqa: E402
from napari_convnp.stack_fill import fill_stack  # noqa: E402
from napari_convnp.stack_xarray import fill_stack_dataarray  # noqa: E402

from .test_fusion import texture  # noqa: E402
from .test_inpaint import stripes  # noqa: E402

DATES = np.array(["2011-01-01", "2011-01-17", "2011-02-02"], "datetime64[ns]")
FAST = {"device": "cpu", "biharmonic_weight": 0.0}  # the network alone: the fill's scene calibration is slow here


def small_stack(h=64, w=64):
    """Three dates of one place, 2 bands, each with SLC-off stripes in other places (NaN) and a cloud on the first
    date (its Fmask class 4 in a quality band)."""
    truth = texture(c=2, h=h, w=w, seed=3)
    bands = np.stack([truth, 1.1 * truth + 5, 0.9 * truth - 5])
    for t in range(3):
        gaps = np.roll(stripes(h, w), 5 * t, axis=1)
        bands[t][:, gaps] = np.nan
    fmask = np.zeros((3, 1, h, w), np.float32)
    fmask[0, 0, 10:20, 30:45] = 4
    data = np.concatenate([bands, fmask], axis=1).astype(np.float32)
    return xr.DataArray(
        data, dims=("time", "band", "y", "x"),
        coords={"time": DATES, "band": ["red", "nir", "fmask"], "y": 4_000_000.0 - 30 * np.arange(h),
                "x": 500_000.0 + 30 * np.arange(w), "spatial_ref": xr.DataArray(0, attrs={"crs_wkt": "EPSG:32633"}),
                "common_name": ("band", ["red", "nir", "qa"])},
        attrs={"crs": "EPSG:32633", "scale_factor": 1.0}, name="reflectance")


def test_coordinates_attributes_and_dim_order_are_kept_and_the_quality_band_is_no_band():
    stack = small_stack().transpose("band", "time", "y", "x")
    mean, variance = fill_stack_dataarray(stack, **FAST)
    for out in (mean, variance):
        assert out.dims == stack.dims
        assert list(out["band"].values) == ["red", "nir"] and list(out["common_name"].values) == ["red", "nir"]
        for name in ("time", "y", "x"):
            assert np.array_equal(out[name].values, stack[name].values)
        assert out["spatial_ref"].attrs == {"crs_wkt": "EPSG:32633"}
        assert {key: out.attrs[key] for key in stack.attrs} == stack.attrs
        assert isinstance(out.data, dsa.Array) and out.dtype == np.float32
    assert fill_stack_dataarray(stack, variance=False, **FAST)[1] is None


@pytest.mark.slow
def test_nothing_is_read_before_compute_and_each_input_chunk_is_read_in_it():
    stack = small_stack()
    reads = []

    def read(block, block_info=None):
        reads.append(block_info[0]["chunk-location"])
        return block

    lazy = stack.copy(data=dsa.from_array(stack.values, chunks=(1, 3, 32, 32)).map_blocks(read, dtype=np.float32))
    mean, variance = fill_stack_dataarray(lazy, chunks=32, overlap=8, **FAST)
    assert reads == []  # building the graph read nothing
    mean, variance = dask.compute(mean, variance, scheduler="synchronous")
    assert len(set(reads)) == 3 * 2 * 2  # every input chunk was read when asked for
    assert np.isfinite(mean.values).all() and (variance.values >= 0).all()


@pytest.mark.slow
def test_one_window_gives_fill_stacks_answer_with_the_references_named():
    stack = small_stack()
    mean, variance = dask.compute(*fill_stack_dataarray(stack, fill_clouds=True, **FAST), scheduler="synchronous")
    bands = [b for b in stack.values[:, :2]]
    cloud = stack.values[:, 2] == 4
    expected = fill_stack(bands, list(cloud), list(DATES), fill_clouds=True, cloudy=list(cloud), **FAST)
    for t, result in enumerate(expected):
        assert np.array_equal(mean.values[t], result.fill.mean)
        assert np.array_equal(variance.values[t], result.fill.variance)
        named = [mean[f"reference_{r + 1}"].values[t] for r in range(len(result.references))]
        assert named == [DATES[i] for i, _ in result.references]


@pytest.mark.slow
def test_chunks_blend_into_the_whole_fill_without_seams_and_keep_known_pixels():
    stack = small_stack(96, 96)
    whole = dask.compute(*fill_stack_dataarray(stack, **FAST), scheduler="synchronous")
    parts = dask.compute(*fill_stack_dataarray(stack, chunks=48, overlap=16, **FAST), scheduler="synchronous")
    known = np.isfinite(stack.values[:, :2]) & (stack.values[:, 2:] != 4)
    assert np.array_equal(parts[0].values[known], stack.values[:, :2][known])
    assert (parts[1].values[known] == 0).all()
    holes = ~np.isfinite(stack.values[:, :2])  # the cloud is kept (variance 0)
    std = np.sqrt(whole[1].values[holes])
    assert np.median(np.abs(parts[0].values - whole[0].values)[holes] / std) < 0.2
    # no seam: the rows either side of the chunk edge differ no more than rows elsewhere
    steps = np.abs(np.diff(np.nan_to_num(parts[0].values), axis=2)).mean(axis=(0, 1, 3))
    assert steps[47] < 2 * np.median(steps)


@pytest.mark.slow
def test_chunked_matches_whole_on_a_real_slc_off_series(data_dir):
    from napari_convnp.stack import read_stack

    stack = read_stack([str(data_dir / "slc_off" / "vpac_rsa__*.tif")])
    crop = (slice(300, 428), slice(1000, 1128))
    bands = np.stack([s.bands[(slice(None), *crop)] for s in stack.scenes])
    da = xr.DataArray(bands, dims=("time", "band", "y", "x"),
                      coords={"time": np.array(stack.dates, "datetime64[ns]"), "band": stack.scenes[0].band_names})
    unusable = xr.DataArray(np.stack([u[crop] for u in stack.unusable]), dims=("time", "y", "x"))
    whole = dask.compute(*fill_stack_dataarray(da, unusable=unusable, device="cpu"), scheduler="synchronous")
    parts = dask.compute(*fill_stack_dataarray(da, unusable=unusable, chunks=64, overlap=16, device="cpu"),
                         scheduler="synchronous")
    holes = whole[1].values > 0  # the filled pixels
    gap = np.abs(parts[0].values - whole[0].values)[holes] / np.sqrt(whole[1].values[holes])
    assert np.median(gap) < 0.1 and np.percentile(gap, 95) < 0.5  # measured 0.05 and 0.34 σ


def stack_with(**changes):
    stack = small_stack(16, 16)
    return stack.assign_coords(**changes) if changes else stack


@pytest.mark.parametrize("make, kwargs, message", [
    (lambda: small_stack(16, 16).isel(time=0), {}, "dims"),
    (lambda: small_stack(16, 16).rename(y="lat"), {}, "dims"),
    (lambda: small_stack(16, 16).drop_vars("time"), {}, "no time coordinate"),
    (lambda: stack_with(time=np.array(["2011-01-01"] * 3, "datetime64[ns]")), {}, "2011-01-01 appears twice"),
    (lambda: stack_with(time=["a", "b", "c"]), {}, "not datetime64"),
    (lambda: small_stack(16, 16), {"qa": "QA_PIXEL"}, "no band named 'QA_PIXEL'"),
    (lambda: small_stack(16, 16), {"unusable": np.zeros((3, 8, 8), bool)}, "unusable has shape"),
    (lambda: small_stack(16, 16), {"max_references": 0}, "max_references"),
    (lambda: small_stack(16, 16), {"chunks": 4, "overlap": 8}, "chunks"),
    (lambda: small_stack(16, 16), {"targets": [0]}, "no option 'targets'"),
    (lambda: small_stack(16, 16), {"method": "biharmonic"}, "no variance"),
    (lambda: np.zeros((3, 2, 16, 16)), {}, "takes an xarray.DataArray"),
])
def test_bad_input_is_one_line_naming_the_problem(make, kwargs, message):
    with pytest.raises(ConvNPError, match=message) as caught:
        fill_stack_dataarray(make(), **kwargs)
    assert "\n" not in str(caught.value)


def test_without_xarray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "xarray", None)
    with pytest.raises(FillError, match=r"napari-convnp\[xarray\]"):
        fill_stack_dataarray(None)
