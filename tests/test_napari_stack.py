"""The stack dock driven headless: dates of one place open as one layer with a date axis, every date (or the one on
screen) filled from the others into mean and variance stacks, the references line following the slider, cancel."""
import datetime
import gc
import time

import numpy as np
import pytest

from napari_convnp._layers import canvas_overlay
from napari_convnp._napari import STACK_KEY
from napari_convnp._reader import get_reader
from napari_convnp._stack import REFERENCES_KEY, StackWidget
from napari_convnp._writer import write_image
from napari_convnp.errors import SceneError

from .test_stack_io import write_tif

DATES = ["2010-01-15", "2010-02-16", "2010-03-04", "2010-04-21"]
SHAPE = (24, 32)
CLOUD = (slice(2, 8), slice(20, 28))  # on the third date


def dates_folder(tmp_path):
    """Four dates of a 24×32 place (smooth fields, brighter each date) named by date, each with its own stripe of
    nodata except the last (clear), and an Fmask band with a cloud on the third date."""
    folder = tmp_path / "place"
    folder.mkdir()
    y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1]] / 6.0
    for i, date in enumerate(DATES):
        bands = np.stack([np.sin(x) + np.cos(y), np.sin(x + y), np.cos(0.7 * x) * np.sin(1.3 * y)])
        bands = (1000 + 300 * bands + 25 * i).astype(np.int16)
        if i < 3:
            bands[:, 5 * i + 3:5 * i + 6] = -9999  # a stripe in another place on each date
        fmask = np.zeros(SHAPE, np.int16)
        if i == 2:
            fmask[CLOUD] = 4
        write_tif(folder / f"{date}_LE07.tif", np.concatenate([bands, fmask[None]]),
                  names=["b3_red", "b4_nir", "b5_swir1", "fmask"], nodata=-9999)
    return folder


@pytest.fixture
def stack_dock(make_napari_viewer, qtbot, tmp_path):
    """The stack dock on a fresh viewer with the four dates opened through it."""
    dock = StackWidget(make_napari_viewer())
    dock.load(dates_folder(tmp_path))
    qtbot.waitUntil(lambda: dock.worker is None, timeout=30_000)
    return dock


def wait_for(qtbot, dock):
    qtbot.waitUntil(lambda: dock.worker is None, timeout=300_000)


def show_date(dock, index):
    dock.viewer.dims.set_current_step(0, index)


def test_a_folder_of_dates_opens_as_one_layer_with_the_dates_on_its_time_axis(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    folder = dates_folder(tmp_path)
    assert get_reader(str(folder)) is not None
    viewer.open(str(folder), plugin="napari-convnp")
    stack = viewer.layers["place"]
    assert stack.data.shape == (4, 3, *SHAPE) and stack.axis_labels == ("date", "band", "y", "x")
    assert [str(d) for d in stack.metadata[STACK_KEY].dates] == DATES
    assert tuple(stack.scale) == (1, 1, 30, 30) and tuple(stack.translate[-2:]) == (-4000000 + 15, 500000 + 15)
    unusable = viewer.layers["unusable"]
    assert unusable.data.shape == stack.data.shape and tuple(unusable.scale) == tuple(stack.scale)  # slides by date
    assert (unusable.data[2][:, CLOUD[0], CLOUD[1]] == 2).all()  # a cloud: 2, in every band
    assert (unusable.data[0, :, 3:6] == 1).all() and not unusable.data[3].any()  # a stripe: 1; the clear date: 0
    # several files opened together are one stack too; a stack is no GeoTIFF
    files = sorted(str(f) for f in folder.iterdir())[:3]
    viewer.open(files, stack=True, plugin="napari-convnp")
    assert viewer.layers[-2].data.shape == (3, 3, *SHAPE)
    with pytest.raises(SceneError, match="a stack of dates"):
        write_image(str(tmp_path / "stack.tif"), stack.data, {"metadata": stack.metadata})


def test_dates_that_repeat_are_refused_in_one_line_naming_the_files(stack_dock, qtbot, tmp_path, monkeypatch):
    said = []
    monkeypatch.setattr("napari_convnp._stack._notify_error", said.append)
    folder = tmp_path / "twice"
    folder.mkdir()
    for name in ("2010-01-15_a.tif", "2010-01-15_b.tif"):
        write_tif(folder / name, np.ones((3, *SHAPE), np.int16))
    stack_dock.load(folder)
    qtbot.waitUntil(lambda: stack_dock.worker is None, timeout=30_000)
    assert len(said) == 1 and "2010-01-15_a.tif and" in said[0] and "both dated 2010-01-15" in said[0]
    assert "\n" not in said[0] and len(stack_dock.viewer.layers) == 2  # the first stack and its masks alone


def test_filling_every_date_gives_mean_and_variance_stacks_of_the_same_shape(stack_dock, qtbot):
    viewer = stack_dock.viewer
    stack = viewer.layers["place"]
    stack_dock.fill_all_button.click()  # through the button, as a user does
    assert gc.get_freeze_count() > 0  # napari's objects out of the collector's full passes while it runs
    wait_for(qtbot, stack_dock)
    assert gc.get_freeze_count() == 0
    mean, variance = viewer.layers["convnp stack mean"], viewer.layers["convnp stack variance"]
    assert mean.data.shape == variance.data.shape == stack.data.shape
    assert mean.axis_labels == ("date", "band", "y", "x") and tuple(mean.scale) == tuple(stack.scale)
    for t in range(3):  # the striped dates: the stripe filled, with a variance; known pixels (and, not asked to be
        stripe = np.s_[:, 5 * t + 3:5 * t + 6]  # filled, the third date's cloud) kept, variance 0
        assert np.isfinite(mean.data[t][stripe]).all() and (variance.data[t][stripe] > 0).all()
        known = np.isfinite(stack.data[t])
        np.testing.assert_array_equal(mean.data[t][known], stack.data[t][known])
        assert (variance.data[t][known] == 0).all()
    said = mean.metadata[REFERENCES_KEY]
    assert "not filled (nothing to fill" in said[3]  # the clear date: nothing to fill, shown as it is
    np.testing.assert_array_equal(mean.data[3], stack.data[3])
    assert stack_dock.status.text() == ("3 of the 4 dates of place filled with convnp; 1 left as they are: nothing "
                                        "to fill: no pixel of it is missing or unusable")


def test_the_references_line_follows_the_time_slider(stack_dock, qtbot):
    show_date(stack_dock, 1)
    assert stack_dock.current_date() == 1
    assert "2010-02-16" in stack_dock.date_line.text() and "not filled yet" in stack_dock.date_line.text()
    stack_dock.fill_date_button.click()  # the date on screen alone
    wait_for(qtbot, stack_dock)
    mean = stack_dock.viewer.layers["convnp stack mean"]
    assert np.isfinite(mean.data[1]).all() and np.isnan(mean.data[[0, 2, 3]]).all()
    line = stack_dock.date_line.text()
    used = [str(datetime.date.fromisoformat(d)) for d in DATES if d != "2010-02-16" and d in line]
    assert line.count("weight") == len(used) >= 1 and "date 2 of 4" in line
    show_date(stack_dock, 3)
    line = stack_dock.date_line.text()
    assert "2010-04-21" in line and "date 4 of 4" in line and "convnp stack mean: not filled yet" in line
    assert canvas_overlay(stack_dock.viewer, "text").text.startswith("2010-04-21")  # the date on the canvas too
    show_date(stack_dock, 1)
    assert stack_dock.date_line.text().count("weight") == len(used)


def test_cancel_stops_the_stack_fill_and_keeps_the_dates_done(stack_dock, qtbot, monkeypatch):
    from napari_convnp import _stack

    real = _stack.fill_stack
    # a date takes 2 s at least: on a loaded machine the four small dates could all be done before the GUI
    # shows the first, and Cancel would come after the end
    monkeypatch.setattr(_stack, "fill_stack", lambda *a, **k: (time.sleep(2), real(*a, **k))[1])
    viewer = stack_dock.viewer
    stack_dock.fill(every=True)
    qtbot.waitUntil(lambda: "convnp stack mean" in viewer.layers, timeout=120_000)  # the first date is done
    stack_dock.cancel()
    wait_for(qtbot, stack_dock)
    # the worker ends, then its last signals reach the GUI thread: the status says so once they have
    qtbot.waitUntil(lambda: stack_dock.status.text().startswith("cancelled"), timeout=30_000)
    assert stack_dock.fill_all_button.isEnabled() and not stack_dock.cancel_button.isEnabled()
    assert gc.get_freeze_count() == 0
    said = viewer.layers["convnp stack mean"].metadata[REFERENCES_KEY]
    assert 1 <= len(said) < 4 and 0 in said  # the dates done stay; the last is never reached
    assert np.isnan(viewer.layers["convnp stack mean"].data[3]).all()
