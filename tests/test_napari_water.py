"""The Water step of the widget, headless: after a fill, P(water) and the water maps prepared in a worker (the GUI
stays responsive), a threshold slider that redraws them without a refill, the area's interval from a worker, and
the indices a scene's bands allow."""
import gc
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_convnp.scene import read_scene
from napari_convnp.tiffwrite import write_bands

from .conftest import choose, wait_for, write_geotiff

OLI_SR = ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]  # blue, green, red, NIR, SWIR1, SWIR2


def _dn(reflectance):
    """Collection 2 Level-2 surface reflectance as stored: DN = (reflectance + 0.2) / 2.75e-5."""
    return np.round((np.asarray(reflectance) + 0.2) / 2.75e-5).astype(np.uint16)


@pytest.fixture
def lake_scene(tmp_path):
    """A 6-band Landsat 9 C2 L2 SR scene (named bands, 30 m UTM) of smooth land around an elliptic lake: water
    is bright in green and dark in SWIR1, land the other way round."""
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    lake = ((y - 48) / 26) ** 2 + ((x - 60) / 40) ** 2 < 1
    texture = 0.02 * np.sin(x / 7) * np.cos(y / 9)
    water = np.array([0.06, 0.07, 0.05, 0.03, 0.01, 0.005])
    land = np.array([0.05, 0.08, 0.07, 0.30, 0.25, 0.15])
    bands = np.where(lake, water[:, None, None], land[:, None, None]) + texture
    georef = read_scene(write_geotiff(tmp_path / "georef.tif", np.zeros((1, 96, 128), np.float32)))
    path = tmp_path / "LC09_L2SP_231062_20230723_20230802_02_T1_lake.tif"
    return write_bands(path, _dn(bands), like=georef, names=OLI_SR), lake


def _filled(widget, qtbot, path, *methods):
    """The scene loaded, SLC-off simulated through the widget, filled with `methods`."""
    widget.load(path)
    widget.seed.setValue(3)
    mask = widget.simulate()
    choose(widget, *methods)
    widget.run()
    wait_for(qtbot, widget)
    return mask


def _mapped(qtbot, panel):
    """*Map water* pressed and its worker waited for: the step, drawn."""
    assert panel.map_water() is not None
    qtbot.waitUntil(lambda: panel.step is not None, timeout=60_000)
    return panel.step


def _wait_area(qtbot, panel):
    qtbot.waitUntil(lambda: panel.area_worker is None and not panel._area_timer.isActive(), timeout=60_000)


def test_the_water_step_makes_p_and_the_water_maps_of_both_fills(widget, qtbot, lake_scene):
    path, lake = lake_scene
    mask = _filled(widget, qtbot, path, "convnp", "biharmonic")
    panel, viewer = widget.water, widget.viewer
    assert panel.fill_combo.value is viewer.layers["convnp mean"]
    assert panel.compare_combo.value is viewer.layers["biharmonic mean"]  # chosen as it arrived
    assert panel.index_combo.currentData() == "mndwi"
    assert panel.reflectance_note.text() == ""  # C2 SR is reflectance
    step = _mapped(qtbot, panel)
    assert step.bands.name == "mndwi" and step.scale == (2.75e-5, -0.2)
    p_layer, water, hard = (viewer.layers[name] for name in ("convnp P(water)", "convnp water", "biharmonic water"))
    p = p_layer.data
    assert tuple(p_layer.contrast_limits) == (0.0, 1.0) and "viridis" in p_layer.colormap.name
    assert p.shape == lake.shape and np.nanmin(p) >= 0 and np.nanmax(p) <= 1
    gaps = mask.data.any(0) if mask.data.ndim == 3 else mask.data.astype(bool)
    assert set(np.unique(p[~gaps])) <= {0.0, 1.0}  # known pixels are water or not
    assert np.array_equal(p[~gaps] == 1, lake[~gaps])
    # the maps find the lake in the gaps too
    for layer in (water, hard):
        assert layer.data.dtype == np.uint8
        assert (layer.data[gaps] == lake[gaps]).mean() > 0.95
    assert water.scale[-1] == p_layer.scale[-1] == 30.0  # on the map, over the fill
    assert water not in widget.mask_combo._layers  # a water map is a product, not a mask to fill
    _wait_area(qtbot, panel)


def test_moving_the_slider_redraws_the_maps_without_a_refill(widget, qtbot, lake_scene, monkeypatch):
    path, lake = lake_scene
    _filled(widget, qtbot, path, "convnp", "biharmonic")
    panel, viewer = widget.water, widget.viewer
    _mapped(qtbot, panel)

    def no_refill(*args, **kwargs):
        raise AssertionError("the slider refilled the scene")

    monkeypatch.setattr("napari_convnp.inpaint.fill", no_refill)
    monkeypatch.setattr("napari_convnp._run.fill", no_refill)
    before = viewer.layers["convnp water"].data.copy()
    before_p = viewer.layers["convnp P(water)"].data.copy()
    panel.threshold.setValue(60)  # MNDWI of the lake is about 0.7: a strict threshold keeps less water
    after = viewer.layers["convnp water"].data
    assert panel.threshold_label.text() == "+0.60"
    assert 0 < after.sum() < before.sum()
    assert not (after > before).any()  # a higher threshold only takes water away
    assert (viewer.layers["convnp P(water)"].data <= before_p + 1e-6).all()
    assert viewer.layers["biharmonic water"].data.sum() < lake.sum()
    panel.threshold.setValue(-100)  # everything above −1 but the pixels without a value
    assert viewer.layers["convnp water"].data.mean() > 0.99
    _wait_area(qtbot, panel)


def test_the_area_interval_arrives_from_the_worker(widget, qtbot, lake_scene):
    path, lake = lake_scene
    switch_interval = sys.getswitchinterval()
    _filled(widget, qtbot, path, "convnp", "biharmonic")
    panel = widget.water
    step = _mapped(qtbot, panel)
    assert "computing" in panel.area_label.text()
    _wait_area(qtbot, panel)
    area = panel.area
    assert area is not None and panel.progress.value() == panel.progress.maximum() > 0
    pixel_km2 = 30 * 30 / 1e6
    assert area.known < area.low <= area.expected <= area.high
    assert area.low - 0.05 * lake.sum() * pixel_km2 < lake.sum() * pixel_km2 < area.high + 0.05 * lake.sum() * pixel_km2
    text = panel.area_label.text()
    assert "km²" in text and "95 %" in text and "biharmonic mean: water" in text and "no interval" in text
    assert f"{area.expected:,.2f} km²" in text
    # the slider moved: the area of the new threshold replaces it once the slider rests
    panel.threshold.setValue(50)
    assert panel.area is None and "computing" in panel.area_label.text()
    _wait_area(qtbot, panel)
    assert panel.area is not None and panel.area.expected < area.expected and step is panel.step
    # the water workers, like a run, keep napari's objects frozen and the GIL's interval short only while they run
    assert gc.get_freeze_count() == 0 and sys.getswitchinterval() == switch_interval


def test_cancelling_the_area_leaves_the_maps_and_says_so(widget, qtbot, lake_scene, monkeypatch):
    import time

    from napari_convnp import water

    path, _ = lake_scene
    _filled(widget, qtbot, path, "convnp")
    panel = widget.water
    slow = water.correlated_normals
    monkeypatch.setattr(water, "correlated_normals", lambda *a: (time.sleep(0.02), slow(*a))[1])
    panel.map_button.click()  # through the button, as a user does
    qtbot.waitUntil(lambda: panel.area_worker is not None, timeout=5_000)
    qtbot.waitUntil(lambda: panel.progress.value() >= 1, timeout=10_000)
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: panel.area_worker is None, timeout=10_000)
    assert panel.area is None and "cancelled" in panel.area_label.text()
    assert "convnp water" in widget.viewer.layers and panel.compare_combo.value is None


def test_a_scene_without_swir1_offers_what_its_bands_allow_and_says_why(widget, qtbot, tmp_path, messages):
    y, x = np.mgrid[0:64, 0:80]
    bands = np.stack([9000 + 50 * np.sin(x / 5 + k) + 30 * np.cos(y / 6) for k in range(3)]).astype(np.uint16)
    path = write_geotiff(tmp_path / "LC08_L1TP_224077_20200518_B234.tif", bands)  # Landsat 8 blue, green, red
    _filled(widget, qtbot, path, "convnp")
    panel = widget.water
    offered = [panel.index_combo.itemData(i) for i in range(panel.index_combo.count())]
    assert offered == ["two bands"]
    why = panel.index_note.text()
    assert "mndwi needs the swir1 band" in why and "ndwi needs the nir band" in why and "ndvi" in why
    assert "digital numbers" in panel.reflectance_note.text()  # L1 DN: the default threshold assumes reflectance
    assert panel.band_a.isVisibleTo(panel) and panel.band_b.isVisibleTo(panel)
    panel.band_a.setCurrentIndex(1)  # green
    panel.band_b.setCurrentIndex(1)
    assert panel.map_water() is None and "names one band twice" in messages[-1]
    panel.band_b.setCurrentIndex(2)  # red
    step = _mapped(qtbot, panel)
    assert (step.bands.a, step.bands.b) == (1, 2) and "convnp water" in widget.viewer.layers
    _wait_area(qtbot, panel)


def test_without_a_convnp_fill_the_step_says_what_to_do(widget, qtbot, lake_scene, messages):
    path, _ = lake_scene
    _filled(widget, qtbot, path, "biharmonic")  # a classical fill alone has no probability
    panel = widget.water
    assert panel.fill_combo.value is None and panel.index_combo.count() == 0
    assert panel.map_water() is None and "run the ConvNP first" in messages[-1]


def _slow_preparation(monkeypatch, seconds=0.5):
    """Preparing the step (its ρ) takes `seconds` longer, so a test can act while it runs."""
    from napari_convnp import _water

    quick = _water.index_water_map
    monkeypatch.setattr(_water, "index_water_map", lambda *a, **k: (time.sleep(seconds), quick(*a, **k))[1])


def test_map_water_prepares_in_a_worker_with_a_busy_bar_and_cancel_stops_it(widget, qtbot, lake_scene, monkeypatch):
    path, _ = lake_scene
    _filled(widget, qtbot, path, "convnp")
    panel = widget.water
    _slow_preparation(monkeypatch)
    assert panel.map_water() is panel.prepare_worker is not None
    assert panel.step is None and "preparing…" in panel.area_label.text()
    assert panel.progress.maximum() == 0 and panel.cancel_button.isEnabled()  # busy, and can be stopped
    panel.threshold.setValue(20)  # the slider stays instant: it only says the threshold
    assert panel.threshold_label.text() == "+0.20"
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: panel.prepare_worker is None, timeout=10_000)
    assert panel.step is None and "cancelled" in panel.area_label.text()
    assert "convnp water" not in widget.viewer.layers and panel.area_worker is None
    assert not panel.cancel_button.isEnabled() and panel.progress.maximum() == 1 and panel.progress.value() == 0
    step = _mapped(qtbot, panel)  # pressed again, it maps
    assert step.bands.name == "mndwi" and "convnp water" in widget.viewer.layers
    _wait_area(qtbot, panel)


def test_a_second_map_water_while_preparing_starts_anew_with_the_current_index(widget, qtbot, lake_scene,
                                                                              monkeypatch):
    path, _ = lake_scene
    _filled(widget, qtbot, path, "convnp")
    panel = widget.water
    _slow_preparation(monkeypatch, 0.2)
    drawn = []
    redraw = panel.redraw
    monkeypatch.setattr(panel, "redraw", lambda: (drawn.append(panel.step.bands.name), redraw())[1])
    first = panel.map_water()
    panel.index_combo.setCurrentIndex(panel.index_combo.findData("ndwi"))  # presses Map water again, as it prepares
    assert panel.map_water() is first  # and once more: still one preparation, to be made anew
    qtbot.waitUntil(lambda: panel.step is not None, timeout=60_000)
    assert drawn == ["ndwi"]  # the first preparation was dropped, the second drawn once
    _wait_area(qtbot, panel)


def test_the_gui_stays_responsive_while_map_water_prepares_a_large_scene(widget, qtbot, monkeypatch):
    """A 10 ms QTimer ticks on through the preparation of a 2000² scene (about a second of reading, ρ and the
    closed form): its longest gap is far below the preparation's time."""
    from qtpy.QtCore import QTimer

    from napari_convnp._layers import result_layer
    from napari_convnp._run import Job
    from napari_convnp.scene import Scene

    size = 2000
    rng = np.random.default_rng(0)
    bands = rng.uniform(0.0, 0.4, (2, size, size)).astype(np.float32)  # green and SWIR1 reflectance: MNDWI
    scene = Scene(bands, ["SR_B3", "SR_B6"], np.zeros(bands.shape, bool), path=Path("LC09_L2SP_synthetic.tif"))
    gaps = np.zeros(bands.shape, bool)
    gaps[:, :, ::3] = True
    job = Job("synthetic", scene, gaps, ["convnp"], 1.0, "cpu", None, mask_name="gaps")
    result_layer(widget.viewer, job, bands, "convnp", "mean")
    result_layer(widget.viewer, job, np.where(gaps, 1e-3, 0).astype(np.float32), "convnp", "variance")
    panel = widget.water
    assert panel.index_combo.currentData() == "mndwi"
    drawn_at = []  # when the GUI thread starts drawing the prepared step
    redraw = panel.redraw
    monkeypatch.setattr(panel, "redraw", lambda: (drawn_at.append(time.perf_counter()), redraw())[1])
    ticks = []
    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    heartbeat.start()
    qtbot.wait(50)
    start = time.perf_counter()
    panel.map_water()
    qtbot.waitUntil(lambda: panel.step is not None, timeout=60_000)
    heartbeat.stop()
    preparing = drawn_at[0] - start
    longest_gap = max(np.diff([start, *(t for t in ticks if start < t < drawn_at[0]), drawn_at[0]]))
    assert preparing > 0.3, f"the preparation took {preparing:.2f} s: too quick to tell a stall"
    assert longest_gap < preparing / 3, f"the GUI stalled {longest_gap:.2f} s of {preparing:.2f} s"
    panel.cancel()
    qtbot.waitUntil(lambda: panel.area_worker is None and panel.prepare_worker is None, timeout=60_000)


def test_removing_the_classical_fill_drops_its_map_from_the_step_without_a_worker(widget, qtbot, lake_scene):
    path, _ = lake_scene
    _filled(widget, qtbot, path, "convnp", "biharmonic")
    panel = widget.water
    step = _mapped(qtbot, panel)
    assert step.classical is widget.viewer.layers["biharmonic mean"]
    widget.viewer.layers.remove("biharmonic mean")  # as when the viewer closes: no worker may start then
    assert panel.compare_combo.value is None and panel.prepare_worker is None and panel.step is step
    assert step.classical is None and "biharmonic" not in panel.area_label.text()
    panel.threshold.setValue(30)  # the slider goes on with the ConvNP's maps alone
    assert panel.step.probability is not None
    _wait_area(qtbot, panel)
