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


def write_geotiff(path: Path, bands: np.ndarray, nodata=None) -> Path:
    """A small georeferenced GeoTIFF (UTM 30 m), band-interleaved as GDAL writes it."""
    extratags = [
        (33550, "d", 3, (30.0, 30.0, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), True),
        (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),
    ]
    if nodata is not None:
        extratags.append((42113, "s", 0, str(nodata), True))
    data = np.moveaxis(bands, 0, -1) if bands.shape[0] > 1 else bands[0]
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig", extratags=extratags)
    return path


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
