"""Shared fixtures: the real data folder (tests that need it skip clearly when it is absent)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

GUI_FIXTURES = {"make_napari_viewer", "qtbot", "widget"}


def pytest_configure(config):
    for name, what in (("gui", "needs napari and Qt (a display: Xvfb)"), ("data", "reads ../shared/data"),
                       ("slow", "takes more than ~20 s on 2 cores"), ("cuda", "needs a CUDA GPU")):
        config.addinivalue_line("markers", f"{name}: {what}")


def pytest_collection_modifyitems(items):
    """Markers by what a test uses, so `pytest -m "not gui and not data and not slow"` runs the core alone."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & GUI_FIXTURES or item.module.__name__.split(".")[-1].startswith("test_napari"):
            item.add_marker("gui")
        if "data_dir" in fixtures:
            item.add_marker("data")
        if item.module.__name__.endswith("test_cuda"):
            item.add_marker("cuda")


DATA = Path(os.environ.get("NAPARI_CONVNP_DATA", Path(__file__).parents[1].parent / "shared" / "data"))
SAMPLES = Path(__file__).parents[1] / "napari_convnp" / "sample_data"  # shipped inside the package


@pytest.fixture
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real Landsat data folder {DATA} is absent (set NAPARI_CONVNP_DATA)")
    return DATA


UTM33N = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)  # GeoKeys of WGS 84 / UTM zone 33N


def geo_tags(origin=(500000.0, 4000000.0), pixel=30.0, geokeys=UTM33N) -> list[tuple]:
    """tifffile extratags of a north-up grid: `origin` the (easting, northing) of the top-left corner."""
    return [(33550, "d", 3, (pixel, pixel, 0.0), True),
            (33922, "d", 6, (0.0, 0.0, 0.0, origin[0], origin[1], 0.0), True),
            (34735, "H", len(geokeys), geokeys, True)]


GEO = geo_tags()  # the grid most tests use: UTM 33N, 30 m, at (500000, 4000000)


def write_geotiff(path: Path, bands: np.ndarray, nodata=None, *, geo=True, origin=(500000.0, 4000000.0),
                  pixel=30.0, names=None, compression=None, extratags=(), tile=None, rowsperstrip=None,
                  planar="contig", photometric="minisblack") -> Path:
    """A small GeoTIFF as GDAL writes it (band-interleaved by default): the one builder of the test suite, with
    whatever tags a case needs (a nodata tag, band names as GDAL metadata, another grid, none)."""
    tags = geo_tags(origin, pixel) if geo else []
    if nodata is not None:
        tags.append((42113, "s", 0, str(nodata), True))
    if names:
        items = "".join(f'<Item name="DESCRIPTION" sample="{i}" role="description">{n}</Item>'
                        for i, n in enumerate(names))
        tags.append((42112, "s", 0, f"<GDALMetadata>{items}</GDALMetadata>", True))
    tags += list(extratags)
    data = bands[0] if len(bands) == 1 else (np.moveaxis(bands, 0, -1) if planar == "contig" else bands)
    kwargs = {"planarconfig": planar} if len(bands) > 1 else {}
    if tile:
        kwargs["tile"] = tile
    if rowsperstrip:
        kwargs["rowsperstrip"] = rowsperstrip
    tifffile.imwrite(path, data, photometric=photometric, compression=compression, extratags=tags, metadata=None,
                     **kwargs)
    return path


def smooth(c=2, h=64, w=96, dtype=np.uint16, offset=1000.0, scale=400.0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / 15.0
    bands = np.stack([np.sin(x + i) * np.cos(y - i) for i in range(c)]) * scale + offset
    return bands.astype(dtype) if np.dtype(dtype).kind != "c" else bands.astype(dtype)


def gap_mask(path: Path, h=64, w=96, rows=(20, 24)) -> Path:
    mask = np.zeros((1, h, w), np.uint8)
    mask[0, rows[0]:rows[1]] = 1
    return write_geotiff(path, mask)


def product(folder: Path, h=64, w=96) -> Path:
    """A Landsat product folder: three band files and the MTL."""
    folder.mkdir()
    for i, band in enumerate(("B1", "B2", "B3")):
        name = f"LE07_L1TP_092084_20110809_20161206_01_T1_{band}.TIF"
        write_geotiff(folder / name, smooth(1, h, w, np.uint8, 100, 50 + i))
    (folder / "LE07_L1TP_092084_20110809_20161206_01_T1_MTL.txt").write_text("GROUP = L1_METADATA_FILE\n")
    return folder


EVALUATE_SETS = ["--sets", "sts-cnn,test"]  # the single-date sets


def fake_evaluate_data(root: Path) -> Path:
    """The files `evaluate` looks for (their contents do not matter to the checks)."""
    from napari_convnp.evaluate import STS_PATCHES

    sts = root / "benchmark" / "sts-cnn"
    sts.mkdir(parents=True)
    for name in ["mask_slc1.tif", "mask_slc2.tif", *STS_PATCHES]:
        (sts / name).write_bytes(b"x")
    for folder in ("test", "val"):
        (root / folder).mkdir()
        (root / folder / "scene.tif").write_bytes(b"x")
    return root



@pytest.fixture
def smooth_scene(tmp_path) -> Path:
    """A 3-band uint16 scene with smooth structure (interpolable, unlike noise)."""
    y, x = np.mgrid[0:160, 0:192] / 40.0
    bands = np.stack([np.sin(x) + np.cos(y), np.sin(x + y), np.cos(x * 0.7) * np.sin(y * 1.3)])
    bands = (1000 + 400 * bands).astype(np.uint16)
    return write_geotiff(tmp_path / "smooth.tif", bands)


@pytest.fixture
def widget(make_napari_viewer):
    """The dock widget on a fresh viewer (napari and Qt imported only by the tests that ask for it)."""
    from napari_convnp._widget import GapFillWidget

    return GapFillWidget(make_napari_viewer())


@pytest.fixture
def messages(monkeypatch):
    """The error notifications the widget shows, in order."""
    said = []
    monkeypatch.setattr("napari_convnp._widget._notify_error", said.append)
    return said


def wait_for(qtbot, widget, timeout=180_000):
    """Until the widget's fill worker has finished."""
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def choose(widget, *methods):
    """Tick exactly these methods."""
    for method, box in widget.method_boxes.items():
        box.setChecked(method in methods)


def run(widget, qtbot, *methods):
    """Tick exactly these methods, run, and wait for the fill; the job."""
    choose(widget, *methods)
    job = widget.run()
    assert job is not None
    wait_for(qtbot, widget)
    return job
