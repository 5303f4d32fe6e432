"""Issue 12, point by point: the napari workflow as users of the best plugins expect it (headless)."""
import gc
import threading

import numpy as np
import pytest
import tifffile

from napari_convnp import inpaint, masks
from napari_convnp._layers import KNOWN_COLOUR, NAME_BUDGET, RESULT_KEY, variance_colormap
from napari_convnp._napari import (
    COMPOSITE_KEY,
    SCENE_KEY,
    band_numbers,
    composites,
    default_composite,
    georeference,
    sensor,
)
from napari_convnp._reader import get_reader
from napari_convnp.scene import Scene, read_scene

from .conftest import SAMPLES, UTM33N, choose, run, wait_for, write_geotiff


def smooth(shape=(3, 160, 192), seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[1], 0:shape[2]] / 25.0
    phase = rng.uniform(0, 3, shape[0])
    return np.stack([np.sin(x + p) + np.cos(0.8 * y - p) for p in phase]).astype(np.float32)


def table(widget):
    return [[widget.table.item(r, c).text() for c in range(widget.table.columnCount())]
            for r in range(widget.table.rowCount())]


# --- 1. scores on scenes with nodata; no stale table --------------------------------------------------

def test_scores_on_a_scene_with_nodata_are_numbers(widget, qtbot):
    """sf_bay stores dark water as 0 (nodata): every SSIM used to read nan."""
    widget.load(SAMPLES / "sf_bay_landsat7_768.tif")
    assert np.isnan(widget.image_combo.value.data).any()
    widget.simulate()
    run(widget, qtbot, "idw", "harmonic")
    rows = table(widget)
    assert [row[0] for row in rows] == ["harmonic", "idw"]  # methods run in the registry's order
    for row in rows:
        assert 0.3 < float(row[2]) <= 1.0 and 10 < float(row[1]) < 60


def test_scores_and_status_clear_when_the_scene_or_mask_changes(widget, qtbot):
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    run(widget, qtbot, "idw")
    assert widget.table.rowCount() == 1 and widget.status.text() and widget.scores_caption.text()
    widget.seed.setValue(3)
    widget.simulate()  # a new mask: the old scores no longer describe it
    assert widget.table.rowCount() == 0 and not widget.status.text() and not widget.scores_caption.text()
    run(widget, qtbot, "idw")
    assert widget.table.rowCount() == 1
    widget.load(SAMPLES / "sf_bay_landsat7_768.tif")  # another scene
    assert widget.table.rowCount() == 0 and not widget.status.text()


# --- 2. side by side ----------------------------------------------------------------------------------

def test_side_by_side_fits_labels_and_leaves_masks_out(widget, qtbot):
    viewer = widget.viewer
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    mask = widget.simulate()
    run(widget, qtbot, "idw", "gauss")
    bands = widget.image_combo.value
    composite = next(layer for layer in viewer.layers if COMPOSITE_KEY in layer.metadata)
    bands.name = "LE07_L2SP_044034_20030601_20200915_02_T1_SR"  # a product name, longer than a cell
    widget.grid_button.setChecked(True)
    assert widget.grid.enabled
    in_grid = [layer for layer in viewer.layers if layer.visible]
    assert mask not in in_grid and composite not in in_grid and bands in in_grid
    assert {layer.name for layer in in_grid} == {bands.name, "idw mean", "gauss mean"}
    assert all(layer.name_overlay.visible for layer in in_grid)  # every cell says what it shows
    idw = viewer.layers["idw mean"]
    assert bands.name_overlay.font_size < idw.name_overlay.font_size == 10  # the long name shrinks to fit
    zoom = viewer.camera.zoom
    viewer.reset_view()  # what Home would do: nothing left to fit
    assert viewer.camera.zoom == pytest.approx(zoom)
    widget.grid_button.setChecked(False)
    assert mask.visible and composite.visible and not bands.visible
    assert not any(layer.name_overlay.visible for layer in viewer.layers)
    viewer.grid.enabled = True  # napari's own grid button does the same
    assert widget.grid_button.isChecked() and not mask.visible


# --- 3. names the layer list can tell apart -----------------------------------------------------------

def elided(name, budget=NAME_BUDGET):
    """What the layer list shows at its default width: the middle of a long name elided."""
    if len(name) <= budget:
        return name
    return name[: budget // 2] + "…" + name[-(budget - budget // 2 - 1):]


def test_names_tell_results_and_masks_apart(widget, qtbot):
    widget.load(SAMPLES / "LE07_L2SP_225078_20110306_slc_off_B1.tif")
    gaps = widget.detect()
    painted = widget.new_paint_layer()
    painted.data[:20, :20] = 1
    widget.mask_combo.value, widget.other_combo.value = gaps, painted
    union = widget.combine()
    widget.mask_combo.value = gaps
    single_date = [m for m in inpaint.METHODS if m not in inpaint.NEEDS_REFERENCE]
    run(widget, qtbot, *single_date)
    widget.density.setValue(50)
    run(widget, qtbot, "convnp", "harmonic")
    made = [layer.name for layer in widget.viewer.layers if RESULT_KEY in layer.metadata]
    expected = {"harmonic mean", "biharmonic mean", "convnp variance", "convnp 50% variance", "harmonic 50% mean"}
    assert expected <= set(made)
    assert len(made) == 3 + len(single_date) + 1 + 3  # 3 masks; means and the ConvNP's variance; then at 50 %
    shown = [elided(name) for name in made]
    assert len(set(shown)) == len(shown), sorted(shown)
    assert union.name == "gaps ∪ painted" == elided(union.name)  # shown whole: not like the painted layer


def test_a_second_scene_keeps_its_results_apart(widget, qtbot):
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    run(widget, qtbot, "idw")
    first = widget.viewer.layers["idw mean"]
    widget.load(SAMPLES / "sf_bay_landsat7_768.tif")
    widget.simulate()
    run(widget, qtbot, "idw")
    second = widget.viewer.layers["idw mean · sf_bay_landsat7_768"]
    assert first.data.shape == second.data.shape and not np.array_equal(first.data, second.data, equal_nan=True)
    assert first.metadata[RESULT_KEY]["source"] == "itaipu_landsat8_B234_768"


# --- 4. scale and translate from the georeferencing ---------------------------------------------------

def test_layers_sit_on_the_map_and_results_keep_the_source_placement(widget, qtbot, tmp_path):
    path = write_geotiff(tmp_path / "scene.tif", (1000 + 300 * smooth()).astype(np.uint16))
    widget.load(path)
    viewer = widget.viewer
    bands = widget.image_combo.value
    np.testing.assert_allclose(bands.scale, (1, 30, 30))
    np.testing.assert_allclose(bands.translate, (0, -4000000 + 15, 500000 + 15))  # pixel centres, −northing
    composite = next(layer for layer in viewer.layers if COMPOSITE_KEY in layer.metadata)
    np.testing.assert_allclose(composite.scale, (30, 30))
    assert [str(u) for u in viewer.layers.units[-2:]] == ["meter", "meter"]  # the scale bar counts metres
    assert viewer.scale_bar.visible
    # a user who moves the source gets masks and results where the source is now
    bands.scale, bands.translate = (1, 120, 120), (0, 50, -70)
    mask = widget.simulate()
    run(widget, qtbot, "idw")
    for layer in (mask, viewer.layers["idw mean"]):
        np.testing.assert_allclose(layer.scale[-2:], (120, 120))
        np.testing.assert_allclose(layer.translate[-2:], (50, -70))


def test_overlapping_scenes_line_up():
    """Two scenes of one grid, one 3 rows south and 5 columns east: the same ground, the same world point."""
    a = Scene(np.zeros((1, 10, 10), np.float32), ["B1"], np.zeros((1, 10, 10), bool),
              {33550: (30.0, 30.0, 0.0), 33922: (0, 0, 0, 500000.0, 4000000.0, 0), 34735: UTM33N})
    b = Scene(a.bands, ["B1"], a.nodata,
              {33550: (30.0, 30.0, 0.0), 33922: (0, 0, 0, 500000.0 + 150, 4000000.0 - 90, 0), 34735: UTM33N})
    pa, pb = georeference(a), georeference(b)
    world = lambda p, r, c: np.add(p["translate"], np.multiply(p["scale"], (r, c)))  # noqa: E731
    np.testing.assert_allclose(world(pa, 3, 5), world(pb, 0, 0))
    assert pa["units"] == ("m", "m")
    point = Scene(a.bands, ["B1"], a.nodata, {**a.geo_tags, 34735: (1, 1, 0, 1, 1025, 0, 1, 2)})  # PixelIsPoint
    np.testing.assert_allclose(georeference(point)["translate"], (-4000000.0, 500000.0))
    transform = (30.0, 0, 0, 500000.0, 0, -30.0, 0, 4000000.0, 0, 0, 1, 0, 0, 0, 0, 1)
    np.testing.assert_allclose(georeference(Scene(a.bands, ["B1"], a.nodata, {34264: transform}))["scale"], (30, 30))
    rotated = (30.0, 5.0, 0, 500000.0, 5.0, -30.0, 0, 4000000.0, 0, 0, 1, 0, 0, 0, 0, 1)
    assert georeference(Scene(a.bands, ["B1"], a.nodata, {34264: rotated})) is None  # left in pixels
    assert georeference(Scene(a.bands, ["B1"], a.nodata)) is None


# --- 5. progress, scoring off the GUI thread, Save's default, tooltips -------------------------------

def test_progress_scores_and_save(widget, qtbot, monkeypatch):
    from napari_convnp import _layers, metrics

    on_gui_thread = []

    def watched(function):
        return lambda *a, **k: (on_gui_thread.append(threading.current_thread() is threading.main_thread()),
                                function(*a, **k))[1]

    monkeypatch.setattr(metrics, "scores", watched(metrics.scores))
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    monkeypatch.setattr(_layers, "contrast_limits", watched(_layers.contrast_limits))
    run(widget, qtbot, "idw")
    assert widget.progress.value() == widget.progress.maximum() > 0  # the run ended: full
    choose(widget, "gauss", "harmonic")
    widget.run()
    assert widget.progress.maximum() == 0  # a new run starts busy, not at the last run's 100 %
    wait_for(qtbot, widget)
    assert on_gui_thread == [False] * 6  # PSNR/SSIM and display percentiles computed in the worker
    assert widget.save_combo.value is widget.viewer.layers["gauss mean"]  # the newest result, not the RGB


def test_every_control_explains_itself(widget):
    from qtpy.QtWidgets import QCheckBox, QComboBox, QPushButton, QSlider, QSpinBox, QTableWidget

    controls = [w for kind in (QPushButton, QCheckBox, QComboBox, QSpinBox, QSlider, QTableWidget)
                for w in widget.findChildren(kind)]
    assert len(controls) > 20
    missing = [w.text() if hasattr(w, "text") else type(w).__name__ for w in controls if not w.toolTip()]
    assert not missing, missing
    assert "share of the known pixels" in widget.density.toolTip()


# --- 6. composites by the sensor's band numbers ------------------------------------------------------

def _scene(names, filename):
    from pathlib import Path

    c = len(names)
    return Scene(np.zeros((c, 2, 2), np.float32), names, np.zeros((c, 2, 2), bool), path=Path(filename))


def test_composites_follow_the_sensor_numbering():
    l7 = _scene([f"B{n}" for n in (1, 2, 3, 4, 5, 7)], "LE07_L2SP_x.tif")
    assert composites(l7) == {"natural colour (3-2-1)": (2, 1, 0), "false colour (4-3-2)": (3, 2, 1),
                              "SWIR (5-4-3)": (4, 3, 2), "as stored (bands 1-2-3)": (0, 1, 2)}
    l8 = _scene([f"SR_B{n}" for n in range(1, 8)], "LC08_L2SP_x.tif")
    assert sensor(l8) == "oli"
    assert list(composites(l8))[:3] == ["natural colour (4-3-2)", "false colour (5-4-3)", "SWIR (6-5-4)"]
    assert composites(l8)["natural colour (4-3-2)"] == (3, 2, 1)
    l8_named_in_file = _scene(["band 1", "band 2", "band 3"], "itaipu_landsat8_B234_768.tif")
    assert band_numbers(l8_named_in_file) == [2, 3, 4]
    assert composites(l8_named_in_file) == {"natural colour (4-3-2)": (2, 1, 0), "as stored (bands 1-2-3)": (0, 1, 2)}
    three_unknown = _scene(["band 1", "band 2", "band 3"], "sf_bay_landsat7_768.tif")
    assert composites(three_unknown) == {"as stored (bands 1-2-3)": (0, 1, 2)}  # often a composite already
    six_oli = _scene([f"layer.{i}" for i in range(1, 7)], "LC08_003069_clip.tif")
    assert band_numbers(six_oli) == [2, 3, 4, 5, 6, 7]
    colours = _scene(["red", "green", "blue"], "carmel_L8_SR_rgb.tif")
    assert default_composite(colours) == "natural colour (red-green-blue)"
    assert composites(_scene(["band 1"], "one.tif")) == {}


def test_the_composite_menu_follows_the_scene(widget, tmp_path):
    seven = write_geotiff(tmp_path / "LE07_seven.tif", (np.arange(7)[:, None, None] * 10 + smooth((7, 40, 50)) * 4 + 20)
                    .astype(np.uint8))
    widget.load(seven)
    items = [widget.composite.itemText(i) for i in range(widget.composite.count())]
    assert items == ["natural colour (3-2-1)", "false colour (4-3-2)", "SWIR (5-4-3)", "as stored (bands 1-2-3)"]
    widget.composite.setCurrentText("SWIR (5-4-3)")
    widget.load(SAMPLES / "sf_bay_landsat7_768.tif")  # 3 unnamed bands: no SWIR to offer
    items = [widget.composite.itemText(i) for i in range(widget.composite.count())]
    assert items == ["as stored (bands 1-2-3)"] and widget.composite.currentText() == items[0]
    widget.image_combo.value = widget.viewer.layers["LE07_seven"]  # back: the menu shows what that scene shows
    assert widget.composite.currentText() == "SWIR (5-4-3)"
    widget.load(SAMPLES / "LE07_L2SP_225078_20110306_slc_off_B1.tif")  # one band: nothing to compose
    assert widget.composite.count() == 0 and not widget.composite.isEnabled()


# --- 7. the natural reader; layers from napari's builtins --------------------------------------------

@pytest.fixture
def fresh_settings(monkeypatch):
    """napari settings that are never written to the user's config."""
    import napari.settings
    from napari.settings import NapariSettings

    monkeypatch.setattr(napari.settings, "_SETTINGS", NapariSettings(config_path=None))
    return napari.settings.get_settings()


def test_tifs_open_with_this_plugin_when_the_user_says_so(widget, fresh_settings, tmp_path, qtbot):
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog, prepare_remaining_readers
    from napari.errors import MultipleReaderError

    path = SAMPLES / "itaipu_landsat8_B234_768.tif"
    dialog = QtReaderDialog(pth=str(path), readers=prepare_remaining_readers([str(path)]))
    qtbot.addWidget(dialog)
    assert dialog._get_plugin_choice() == "ConvNP Landsat gap filling"  # napari's dialog offers this plugin first
    # plugin=None is what drag and drop and File › Open pass (viewer.open's own default is napari's builtins)
    with pytest.raises(MultipleReaderError):  # napari's default: the 'choose a reader' dialog
        widget.viewer.open(path, plugin=None)
    assert not widget.reader_pref.isChecked()
    widget.reader_pref.setChecked(True)
    assert fresh_settings.plugins.extension2reader["*.tif"] == "napari-convnp"
    layers = widget.viewer.open(path, plugin=None)
    assert any(SCENE_KEY in layer.metadata for layer in layers)  # opened by this plugin, no dialog
    widget.reader_pref.setChecked(False)
    assert "*.tif" not in fresh_settings.plugins.extension2reader
    plain = tmp_path / "micrograph.tif"
    tifffile.imwrite(plain, np.zeros((8, 8), np.uint8))
    assert get_reader(str(plain)) is None  # a TIFF that is not a GeoTIFF is left to other readers


def test_a_layer_from_napari_builtins_is_usable(widget, qtbot, tmp_path):
    """napari's TIFF reader gives an int16 RGB layer with -999 in the gaps; the widget reads the file again."""
    data = (1000 + 300 * smooth((3, 120, 150))).astype(np.int16)
    stripes = masks.simulate_slc_off((120, 150), seed=1, pixel_size=30)
    data[:, stripes] = -999
    path = write_geotiff(tmp_path / "LE07_builtin.tif", data, nodata=-999)
    [layer] = widget.viewer.open(path, plugin="napari")
    assert layer.rgb and layer.data.dtype == np.int16 and (layer.data == -999).any()
    assert widget.image_combo.value is layer
    gaps = widget.detect()
    assert gaps is not None and gaps.data.shape == (3, 120, 150) and gaps.data.any()
    assert np.array_equal(gaps.data.astype(bool), masks.detect_scene_gaps(read_scene(path)))  # as if read by us
    assert not gaps.data[:, ~stripes].any()  # only where the -999 stripes are
    assert widget.composite.count() >= 1  # band numbers and nodata came from the file
    run(widget, qtbot, "idw")
    mean = widget.viewer.layers["idw mean"]
    filled = gaps.data.astype(bool)
    assert np.isfinite(mean.data[filled]).all() and np.nanmin(mean.data) > 0  # -999 never taken as a value
    assert np.isnan(mean.data[(data == -999) & ~filled]).all()  # nodata not filled stays no data


def test_a_many_band_layer_from_napari_builtins_is_read_bands_last(widget, qtbot, tmp_path):
    """napari's TIFF reader gives an 8-band GeoTIFF as one H×W×8 layer (not RGB): its bands are its last axis."""
    data = (1000 + 300 * smooth((8, 120, 150))).astype(np.int16)
    stripes = masks.simulate_slc_off((120, 150), seed=1, pixel_size=30)
    data[:, stripes] = -999
    path = write_geotiff(tmp_path / "LE07_eight.tif", data, nodata=-999)
    [layer] = widget.viewer.open(path, plugin="napari")
    assert layer.data.shape == (120, 150, 8) and not layer.rgb
    widget.image_combo.value = layer
    gaps = widget.detect()
    assert gaps.data.shape == (8, 120, 150)
    assert np.array_equal(gaps.data.astype(bool), masks.detect_scene_gaps(read_scene(path)))
    run(widget, qtbot, "idw")
    mean = widget.viewer.layers["idw mean"]
    assert mean.data.shape == (8, 120, 150) and np.isfinite(mean.data[gaps.data.astype(bool)]).all()
    assert widget.image_combo.value is layer and not widget.image_combo.accepts(mean)  # a result is no scene


def test_a_layer_without_a_file_fills_with_nan_as_nodata(widget, qtbot):
    data = smooth((3, 64, 64))
    data[:, 10:14] = np.nan
    layer = widget.viewer.add_image(np.moveaxis(data, 0, -1), rgb=True, name="pasted")
    widget.image_combo.value = layer
    gaps = widget.detect()
    assert gaps.data[:, 10:14].all() and gaps.data.sum() == 3 * 4 * 64
    run(widget, qtbot, "harmonic")
    assert np.isfinite(widget.viewer.layers["harmonic mean"].data).all()


# --- 10. one library call detects as the widget does --------------------------------------------------

def test_one_call_detects_gaps_as_the_widget_does(widget):
    scene = read_scene(SAMPLES / "sf_bay_landsat7_768.tif")
    gaps = masks.detect_scene_gaps(scene)
    assert gaps.mean() < 0.01  # dark water (stored as 0) is not a gap
    widget.load(SAMPLES / "sf_bay_landsat7_768.tif")
    assert np.array_equal(widget.detect().data.astype(bool), gaps)


# --- 12. known and unfilled pixels in the variance ----------------------------------------------------

def test_known_and_unfilled_pixels_look_different_in_the_variance(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    variance = np.full((60, 90), 0.5, np.float32)
    variance[:, :30] = np.nan  # nodata not filled (off-scene)
    variance[:, 30:60] = 0.0  # known pixels: certain
    viewer.add_image(variance, colormap=variance_colormap(), contrast_limits=(0, 1))
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    h, w = shot.shape[:2]
    row = shot[h // 2]
    left, middle, right = (row[int(w * f), :3].astype(int) for f in (0.5 - 0.3, 0.5, 0.5 + 0.3))
    background = shot[2, 2, :3].astype(int)
    assert np.abs(middle - left).sum() > 60  # certain ≠ unknown
    assert np.abs(left - background).sum() < 10  # unknown: no value drawn, as napari shows no data
    np.testing.assert_allclose(middle, [int(KNOWN_COLOUR[i:i + 2], 16) for i in (1, 3, 5)], atol=3)
    assert np.abs(right - middle).sum() > 60  # and the gaps' magma differs from both


# --- the second date and test-time adaptation (issue 9 and the adaptation issue land here) -----------

def _two_dates(tmp_path):
    """Date A and date B of one place; B is 0.8 A + 50 on a grid 4 rows south and 6 columns east of A's."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    ground = np.stack([ndimage.gaussian_filter(rng.standard_normal((180, 220)), 1.5) for _ in range(3)])
    ground = 5000 + 2000 * ground + 100 * smooth((3, 180, 220))  # no value near 0: uint16 never wraps
    a = write_geotiff(tmp_path / "LE07_date_a.tif", ground[:, :160, :192].astype(np.uint16))
    b = write_geotiff(tmp_path / "LE07_date_b.tif", (0.8 * ground[:, 4:164, 6:198] + 50).astype(np.uint16),
                origin=(500000.0 + 6 * 30, 4000000.0 - 4 * 30))
    return a, b


def test_reference_picker_aligns_another_date(widget, qtbot, tmp_path, messages):
    a, b = _two_dates(tmp_path)
    widget.load(b)
    widget.load(a)
    viewer = widget.viewer
    assert widget.reference_combo.currentText() == "none (one date)"
    assert [widget.reference_combo.itemText(i) for i in range(widget.reference_combo.count())] == [
        "none (one date)", "LE07_date_a", "LE07_date_b"]
    two_date = sorted(inpaint.NEEDS_REFERENCE)
    assert two_date and not any(widget.method_boxes[m].isEnabled() for m in two_date)  # nothing to use yet
    widget.reference_combo.value = viewer.layers["LE07_date_b"]
    assert all(widget.method_boxes[m].isEnabled() for m in two_date)
    widget.simulate()
    job = run(widget, qtbot, "biharmonic", *two_date)
    assert job.reference_name == "LE07_date_b" and isinstance(job.reference, Scene)
    scores = {row[0]: float(row[1]) for row in table(widget)}
    assert set(scores) == {"biharmonic", *two_date} and "LE07_date_b" in widget.scores_caption.text()
    # B is a linear function of A once aligned: the two-date fill is far better than one date alone
    assert scores["regression"] > scores["biharmonic"] + 6, scores
    # a reference cannot be the scene itself
    widget.reference_combo.value = viewer.layers["LE07_date_a"]
    assert widget.run() is None and "the scene itself" in messages[-1]


def test_a_reference_off_the_grid_is_refused_once_before_the_run(widget, qtbot, tmp_path, messages):
    a, _ = _two_dates(tmp_path)
    ground = read_scene(a).bands
    shifted = write_geotiff(tmp_path / "LE07_half_pixel.tif", ground.astype(np.uint16), origin=(500015.0, 4000000.0))
    widget.load(shifted)
    widget.load(a)
    widget.simulate()
    widget.reference_combo.value = widget.viewer.layers["LE07_half_pixel"]
    choose(widget, "convnp", "regression")
    assert widget.run() is None and widget.worker is None  # nothing started
    assert len(messages) == 1 and "the reference 'LE07_half_pixel' does not fit this scene" in messages[0]
    assert "shifted by a fraction of a pixel" in messages[0]


def test_convnp_with_a_reference_is_named_apart(widget, qtbot, tmp_path, messages):
    a, b = _two_dates(tmp_path)
    widget.load(b)
    widget.load(a)
    widget.simulate()
    run(widget, qtbot, "convnp")
    assert "biharmonic in the mean" in widget.status.text()  # the blend chosen on this scene
    widget.reference_combo.value = widget.viewer.layers["LE07_date_b"]
    run(widget, qtbot, "convnp")
    assert {"convnp mean", "convnp+ref mean", "convnp variance", "convnp+ref variance"} <= {
        layer.name for layer in widget.viewer.layers}
    assert [(row[0], row[7]) for row in table(widget)] == [("convnp", "none"), ("convnp+ref", "LE07_date_b")]
    assert "where the reference is known" in widget.status.text()  # how far this reference was trusted
    assert all(fill in widget.status.text() for fill in ("reference base", "multiband fill"))


def test_adapt_to_this_scene(widget, qtbot):
    widget.load(SAMPLES / "LE07_L2SP_225078_20110306_slc_off_B1.tif")
    widget.detect()
    widget.adapt.setChecked(True)
    widget.adapt_steps.setValue(2)
    job = run(widget, qtbot, "convnp", "idw")
    assert job.adapt_steps == 2
    names = {layer.name for layer in widget.viewer.layers}
    assert {"convnp+adapt mean", "convnp+adapt variance", "idw mean"} <= names  # idw is not adapted


def test_the_biharmonic_share_can_be_fixed_in_the_widget(widget, qtbot, monkeypatch):
    """By default the ConvNP chooses it on the scene; a value in the box is passed to the fill as given (only
    to the ConvNP)."""
    from napari_convnp import _run

    seen = {}
    real = _run.fill

    def recorder(bands, mask, **options):
        seen[options["method"]] = options.get("biharmonic_weight", "chosen")
        return real(bands, mask, **options)

    monkeypatch.setattr(_run, "fill", recorder)
    widget.load(SAMPLES / "LE07_L2SP_225078_20110306_slc_off_B1.tif")
    widget.detect()
    assert widget.blend.text() == "chosen on the scene"
    widget.blend.setValue(25)
    job = run(widget, qtbot, "convnp", "idw")
    assert job.biharmonic_weight == 0.25 and seen == {"convnp": 0.25, "idw": "chosen"}


# --- whole scenes: results streamed to files and read back lazily (issue 13) -------------------------

def test_a_whole_scene_result_is_read_back_lazily_and_equals_the_in_memory_one(widget, qtbot, monkeypatch):
    """Above STREAM_RESULTS_VALUES the mean and variance go to GeoTIFFs as they are computed and the layers
    read them back window by window (dask), with the same values, scores and display as a fill in memory;
    saving such a layer writes the whole."""
    import dask.array as da

    from napari_convnp import _napari, _run

    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    widget.show_std.setChecked(True)
    in_memory = run(widget, qtbot, "convnp", "idw")
    kept = {name: np.asarray(widget.viewer.layers[name].data) for name in
            ("convnp mean", "convnp variance", "convnp std", "idw mean")}
    limits = {name: tuple(widget.viewer.layers[name].contrast_limits) for name in kept}
    scores = dict(in_memory.scores)

    monkeypatch.setattr(_run, "STREAM_RESULTS_VALUES", 1000)
    streamed = run(widget, qtbot, "convnp", "idw")
    for name, values in kept.items():
        layer = widget.viewer.layers[name]
        assert isinstance(layer.data, da.Array), name
        np.testing.assert_array_equal(np.asarray(layer.data), values, err_msg=name)
        assert tuple(layer.contrast_limits) == limits[name]  # a small scene: the sample is all of it

    monkeypatch.setattr(_napari, "DISPLAY_SAMPLE", 100_000)  # every 4th row and column
    run(widget, qtbot, "convnp")
    for name in ("convnp mean", "convnp variance"):
        low, high = widget.viewer.layers[name].contrast_limits
        assert abs(low - limits[name][0]) < 0.15 * (limits[name][1] - limits[name][0]), name
        assert abs(high - limits[name][1]) < 0.15 * (limits[name][1] - limits[name][0]), name
    for label, values in scores.items():
        for key, value in values.items():
            assert streamed.scores[label][key] == pytest.approx(value, rel=1e-9), (label, key)
    files = sorted(p.name for p in _run.results_folder().iterdir())
    assert any(f.endswith("mean.tif") for f in files) and any(f.endswith("variance.tif") for f in files)
    assert not [f for f in files if not f.endswith(".tif")]  # no scratch files left behind

    out = widget.viewer.layers["convnp mean"]
    assert widget.save(out, str(_run.results_folder() / "saved.tif"))
    np.testing.assert_array_equal(read_scene(_run.results_folder() / "saved.tif").bands, kept["convnp mean"])


def test_a_whole_scene_is_read_and_detected_off_the_gui_thread(widget, qtbot, monkeypatch, tmp_path):
    """Reading and detecting a whole scene take 10–20 s: above STREAM_RESULTS_VALUES both run in a thread
    worker with a busy progress bar, and end with the same layers as the direct path."""
    from napari_convnp import _run, _widget

    path = SAMPLES / "sf_bay_landsat7_768.tif"
    direct = widget.load(path)
    assert direct is None and widget.worker is None
    gaps_direct = np.asarray(widget.detect().data)

    threads = []
    real_read, real_detect = _widget.read_scene, masks.detect_scene_gaps
    monkeypatch.setattr(_widget, "read_scene", lambda p: (threads.append("read"), real_read(p))[1] if
                        threading.current_thread() is not threading.main_thread() else pytest.fail("read on GUI"))
    monkeypatch.setattr(masks, "detect_scene_gaps", lambda s: real_detect(s) if threading.current_thread() is not
                        threading.main_thread() else pytest.fail("detected on the GUI thread"))
    monkeypatch.setattr(_run, "STREAM_RESULTS_VALUES", 1000)
    assert widget.load(path) is not None  # the worker
    assert widget.progress.maximum() == 0 and widget.status.text().startswith("reading sf_bay")
    assert gc.get_freeze_count() > 0  # napari's objects out of the collector's full passes while it reads
    wait_for(qtbot, widget)
    assert gc.get_freeze_count() == 0
    assert threads == ["read"] and widget.image_combo.value.name.startswith("sf_bay")
    assert widget.detect() is not None
    wait_for(qtbot, widget)
    np.testing.assert_array_equal(np.asarray(widget.mask_combo.value.data), gaps_direct)
    assert widget.progress.maximum() == 1 and not widget.status.text().endswith("…")


def test_a_whole_scene_result_is_shown_from_a_preview_and_read_only_where_in_view(widget, qtbot, monkeypatch, tmp_path):
    """Issue 25.6/25.5: adding a streamed result read a whole band on the GUI thread (2.5 s a layer on a 7000×8000
    scene, 4 s at the end of a run). Its layers are now multiscale: the file, and every k-th row and column kept
    on the way (PREVIEW_SIDE on the longer side), shown while the scene is in view; its RGB composite is made on
    the way too, stretched as the scene's own. Saving and the water step use the full resolution."""
    import dask.array as da

    from napari_convnp import _layers, _run
    from napari_convnp._napari import composite_limits, default_composite, rgb_composite

    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    monkeypatch.setattr(_run, "STREAM_RESULTS_VALUES", 1000)
    monkeypatch.setattr(_run, "PREVIEW_SIDE", 256)  # 768 px: every 3rd row and column
    monkeypatch.setattr(_layers, "COARSEST_SIDE", 64)  # and that halved down to 64 px: 256, 128, 64
    widget.show_std.setChecked(True)
    run(widget, qtbot, "convnp")
    scene = widget._scene()[1]
    for kind in ("mean", "variance", "std"):
        layer = widget.viewer.layers[f"convnp {kind}"]
        assert layer.multiscale and isinstance(layer.data[0], da.Array), kind
        assert layer.visible, kind  # added hidden, shown in the next turn (the GUI's stall at a run's end)
        full = np.asarray(layer.data[0])
        assert full.shape == scene.shape
        assert len(layer.data) == 4, kind
        for level, step in zip(layer.data[1:], (3, 6, 12)):
            assert level.flags.c_contiguous, kind
            np.testing.assert_array_equal(level, full[:, ::step, ::step], err_msg=kind)
    mean = np.asarray(widget.viewer.layers["convnp mean"].data[0])
    rgb = widget.viewer.layers["convnp RGB"]
    assert rgb.rgb and rgb.multiscale and rgb.visible and rgb.data[0].shape == (*scene.shape[1:], 3)
    choice = default_composite(scene)
    expected = rgb_composite(scene.with_bands(mean), choice, composite_limits(scene, choice))
    np.testing.assert_array_equal(rgb.data[0], expected)
    for level, step in zip(rgb.data[1:], (3, 6, 12), strict=True):
        np.testing.assert_array_equal(level, expected[::step, ::step])

    assert widget.save(widget.viewer.layers["convnp mean"], str(tmp_path / "mean.tif"))
    np.testing.assert_array_equal(read_scene(tmp_path / "mean.tif").bands, mean)
    from napari_convnp._writer import write_image

    layer = widget.viewer.layers["convnp variance"]
    data, state, _ = layer.as_layer_data_tuple()  # what File › Save Selected Layers hands the writer
    write_image(str(tmp_path / "variance.tif"), data, state)
    np.testing.assert_array_equal(read_scene(tmp_path / "variance.tif").bands, np.asarray(layer.data[0]))
