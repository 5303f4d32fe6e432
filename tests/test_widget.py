"""The widget driven headless, as a user would: load → mask → inpaint → layers; cancel; bad files."""
import gc
import sys

import numpy as np
import pytest

from napari_convnp import baselines, inpaint, options
from napari_convnp._layers import InputError, result_label
from napari_convnp._napari import SAMPLE_DIR
from napari_convnp._pickers import LayerPicker
from napari_convnp._reader import get_reader
from napari_convnp._run import Job
from napari_convnp._tooltips import method_description
from napari_convnp._widget import GapFillWidget
from napari_convnp._writer import write_image
from napari_convnp.scene import read_scene

from .conftest import SAMPLES, choose, wait_for

SLC_OFF = "LE07_L2SP_225078_20110306_slc_off_B1"


def test_sample_data_and_reader(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-convnp", "sf_bay")
    names = [layer.name for layer in viewer.layers]
    assert "sf_bay_landsat7_768" in names and any(layer.rgb for layer in viewer.layers)
    bands = viewer.layers["sf_bay_landsat7_768"]
    assert bands.data.shape == (3, 768, 768)
    assert read_scene(SAMPLE_DIR / "sf_bay_landsat7_768.tif").path.parent == SAMPLE_DIR  # inside the package
    assert get_reader(str(SAMPLES / "sf_bay_landsat7_768.tif")) is not None
    assert get_reader("notes.txt") is None


def test_load_detect_inpaint(widget, qtbot, tmp_path, messages):
    widget.load(SAMPLES / f"{SLC_OFF}.tif")
    viewer = widget.viewer
    source = viewer.layers[SLC_OFF]
    assert widget.image_combo.value is source
    mask_layer = widget.detect()
    assert mask_layer.name == "gaps" and mask_layer.data.shape == source.data.shape
    assert 0.3 < mask_layer.data.mean() < 0.5
    choose(widget, "convnp", "idw")
    widget.show_std.setChecked(True)
    widget.run()
    wait_for(qtbot, widget)
    mean, var = viewer.layers["convnp mean"], viewer.layers["convnp variance"]
    assert "convnp std" in viewer.layers and "idw mean" in viewer.layers
    gaps = mask_layer.data.astype(bool)
    assert mean.data.shape == source.data.shape and np.isfinite(mean.data[gaps]).all()
    known = ~gaps & np.isfinite(source.data)
    assert np.array_equal(mean.data[known], source.data[known])
    assert (var.data[gaps] > 0).all() and "magma" in var.colormap.name
    assert widget.table.rowCount() == 0  # real gaps: no truth, no scores
    # the writer keeps the georeferencing of the source scene
    out = tmp_path / "filled.tif"
    write_image(str(out), mean.data, {"metadata": mean.metadata})
    assert read_scene(out).geo_tags == read_scene(SAMPLES / f"{SLC_OFF}.tif").geo_tags
    assert widget.save(var, tmp_path / "variance.tif")
    np.testing.assert_array_equal(read_scene(tmp_path / "variance.tif").bands, var.data)
    # never over the input file
    src = SAMPLES / f"{SLC_OFF}.tif"
    before = src.read_bytes()
    assert not widget.save(source, src) and "overwrite the input" in messages[0]
    assert not widget.save(mask_layer, tmp_path / "mask.tif") and "not an image layer" in messages[-1]
    assert src.read_bytes() == before
    # a second run with another density adds its own layers, the first stay
    widget.density.setValue(50)
    widget.run()
    wait_for(qtbot, widget)
    assert "convnp 50% mean" in viewer.layers and "convnp mean" in viewer.layers


def test_simulate_and_compare(widget, qtbot):
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    mask = widget.simulate()
    assert mask.metadata["simulated"] and 0.1 < mask.data.mean() < 0.35
    choose(widget, "idw", "gauss")
    widget.run()
    wait_for(qtbot, widget)
    assert widget.table.rowCount() == 2
    assert [widget.table.item(row, 0).text() for row in range(2)] == ["idw", "gauss"]
    psnr = float(widget.table.item(0, 1).text())
    assert 15 < psnr < 60
    widget.grid_button.setChecked(True)
    assert widget.grid.enabled


def test_paint_and_combine(widget):
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    simulated = widget.simulate()
    painted = widget.new_paint_layer()
    painted.data[:100, :100] = 1
    widget.mask_combo.value = simulated
    widget.other_combo.value = painted
    widget.combine_op.setCurrentText("union with")
    union = widget.combine()
    assert union.data[..., :100, :100].all()
    widget.mask_combo.value = union
    widget.combine_op.setCurrentText("subtract")
    widget.other_combo.value = painted
    rest = widget.combine()
    assert not rest.data[..., :100, :100].any()
    assert len({simulated.name, painted.name, union.name, rest.name}) == 4  # combining never replaces an input


def test_cancel(widget, qtbot, monkeypatch):
    monkeypatch.setattr("napari_convnp.inpaint.DEFAULT_TILE", 64)
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() >= 1, timeout=60_000)
    widget.cancel()
    wait_for(qtbot, widget)
    assert widget.status.text().startswith("cancelled")
    assert gc.get_freeze_count() == 0  # a cancelled run gives napari's objects back to the collector too
    assert widget.progress.value() < widget.progress.maximum()
    assert not [layer for layer in widget.viewer.layers if "convnp mean" in layer.name]


def test_a_run_leaves_napari_out_of_the_collectors_full_passes_only_while_it_runs(widget, qtbot):
    """And hands the GIL over every millisecond meanwhile (the GUI thread's calls into Python otherwise wait up to
    5 ms each behind the worker), Python's own interval given back at the end."""
    from napari_convnp._run import BACKGROUND_SWITCH_INTERVAL

    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    choose(widget, "idw")
    before = sys.getswitchinterval()
    widget.run()
    assert gc.get_freeze_count() > 0
    assert sys.getswitchinterval() == BACKGROUND_SWITCH_INTERVAL < before
    wait_for(qtbot, widget)
    assert "idw mean" in widget.viewer.layers  # the run ends once its layers are there
    assert gc.get_freeze_count() == 0
    assert sys.getswitchinterval() == before


def test_closing_the_dock_cancels_a_running_fill(make_napari_viewer, qtbot, monkeypatch):
    slow_idw = baselines.METHODS["idw"]
    monkeypatch.setitem(baselines.METHODS, "idw", lambda b, c: (__import__("time").sleep(0.5), slow_idw(b, c))[1])
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    wait_for(qtbot, widget)
    widget.simulate()
    choose(widget, "idw", "gauss", "harmonic")
    widget.run()
    viewer.window.remove_dock_widget(dock)  # what the dock's close button does
    wait_for(qtbot, widget)
    assert widget.job.cancel.is_set()
    assert "gauss mean" not in viewer.layers  # the method after the slow one never ran


def test_bad_file_is_a_notification(widget, tmp_path, messages):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    widget.load(bad)
    assert messages and "broken.tif" in messages[0]
    widget.run()  # nothing loaded: a message, not a traceback
    assert "open a scene first" in messages[-1]
    widget.detect()
    assert "open a scene first" in messages[-1]


def test_rgb_composites(widget, tmp_path):
    from .conftest import write_geotiff

    bands = np.stack([np.full((40, 50), 10 * (b + 1), np.uint8) for b in range(7)])
    bands[:, :20] += 5  # some contrast within each band
    path = write_geotiff(tmp_path / "seven.tif", bands)
    widget.load(path)
    rgb = [layer for layer in widget.viewer.layers if layer.rgb]
    assert len(rgb) == 1 and "3-2-1" in rgb[0].name and rgb[0].data.shape == (40, 50, 3)
    widget.composite.setCurrentText("SWIR (5-4-3)")
    rgb = [layer for layer in widget.viewer.layers if layer.rgb]
    assert len(rgb) == 1 and rgb[0].name.endswith("RGB 5-4-3")
    assert rgb[0].data.dtype == np.uint8 and rgb[0].data.max() == 255  # stretched for the eye


def test_removing_layers_while_a_fill_runs(widget, qtbot, monkeypatch):
    """The user deletes the scene and its mask mid-run: the results still arrive, nothing crashes."""
    slow_idw = baselines.METHODS["idw"]
    monkeypatch.setitem(baselines.METHODS, "idw", lambda b, c: (__import__("time").sleep(0.5), slow_idw(b, c))[1])
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    choose(widget, "idw")
    widget.run()
    widget.viewer.layers.clear()
    wait_for(qtbot, widget)
    assert "idw mean" in widget.viewer.layers
    assert widget.run_button.isEnabled()


def test_an_error_in_the_worker_is_a_notification(widget, qtbot, monkeypatch, messages):
    """torch raises RuntimeError; the thread worker would drop it silently and never finish."""
    def broken(bands, context):
        raise RuntimeError("simulated failure deep inside")

    monkeypatch.setitem(baselines.METHODS, "idw", broken)
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    choose(widget, "idw", "gauss")
    widget.run()
    wait_for(qtbot, widget, timeout=60_000)
    assert widget.run_button.isEnabled()
    assert messages == ["fill failed: idw: simulated failure deep inside"]
    assert "gauss mean" in widget.viewer.layers and "idw mean" not in widget.viewer.layers  # the others go on
    assert [widget.table.item(r, 0).text() for r in range(widget.table.rowCount())] == ["gauss"]


def test_a_run_whose_every_method_fails_leaves_no_busy_bar(widget, qtbot, monkeypatch, messages):
    def broken(bands, context):
        raise RuntimeError("simulated failure")

    monkeypatch.setitem(baselines.METHODS, "idw", broken)
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    choose(widget, "idw")
    widget.run()
    wait_for(qtbot, widget, timeout=60_000)
    assert widget.run_button.isEnabled() and widget.progress.maximum() > 0  # not the endless busy animation


# --- the refactor: pickers, the job, the method registry, the input error --------------------------------

def test_method_boxes_come_from_the_registry(make_napari_viewer, monkeypatch):
    """A baseline added to the registry shows up, with its docstring as tooltip: no second list to edit."""
    def sharpen(bands, context):
        """A made-up fill for this test."""
        return bands

    monkeypatch.setitem(baselines.METHODS, "sharpen", sharpen)
    monkeypatch.setattr(options, "METHODS", (*options.METHODS, "sharpen"))
    widget = GapFillWidget(make_napari_viewer())
    assert list(widget.method_boxes) == list(options.METHODS)
    assert widget.method_boxes["sharpen"].text() == "sharpen"
    assert widget.method_boxes["sharpen"].toolTip() == "A made-up fill for this test."
    assert "Navier" in method_description("ns") and "Telea" in method_description("telea")
    for method in options.METHODS:
        assert widget.method_boxes[method].toolTip(), method


def test_result_labels():
    assert result_label("convnp") == "convnp"
    assert result_label("convnp", 0.5) == "convnp 50%"
    assert result_label("convnp", 1.0, reference=True) == "convnp+ref"
    for method in inpaint.NEEDS_REFERENCE:  # a two-date method always has a reference: no "+ref"
        assert result_label(method, 1.0, reference=True) == method


def test_layer_picker_follows_the_layer_list(make_napari_viewer):
    viewer = make_napari_viewer()
    picker = LayerPicker(viewer, lambda layer: layer.name.startswith("keep"), none="none")
    changes = []
    picker.changed.connect(changes.append)
    viewer.layers.events.inserted.connect(lambda e: picker.refresh())
    viewer.layers.events.removed.connect(lambda e: picker.refresh())
    assert picker.value is None and picker.count() == 1
    first = viewer.add_image(np.zeros((4, 4)), name="keep one")
    viewer.add_image(np.zeros((4, 4)), name="skip")
    assert [picker.itemText(i) for i in range(picker.count())] == ["none", "keep one"]
    picker.value = first
    assert picker.value is first and changes[-1] is first
    with pytest.raises(ValueError):
        picker.value = viewer.layers["skip"]
    viewer.layers.remove(first)
    assert picker.value is None and changes[-1] is None


def test_pickers_follow_renames_and_removals(widget):
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    bands = widget.image_combo.value
    bands.name = "renamed scene"
    assert widget.image_combo.currentText() == "renamed scene"
    assert all(widget.save_combo.itemText(i) != "itaipu_landsat8_B234_768" for i in range(widget.save_combo.count()))
    widget.viewer.layers.remove(bands)
    assert widget.image_combo.value is None


def test_input_errors_are_notifications(widget, messages):
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    assert widget.run() is None and "no mask layer" in messages[-1]
    widget.simulate()
    choose(widget)
    assert widget.run() is None and "at least one method" in messages[-1]
    with pytest.raises(InputError):
        widget._inputs()  # the check itself raises its own type; the button's slot turns it into a message
    widget.other_combo.value = widget.viewer.add_labels(np.zeros((5, 5), np.uint8), name="small")
    assert widget.combine() is None and "differ in size" in messages[-1]


def test_the_running_job(widget, qtbot):
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    choose(widget, "idw")
    widget.density.setValue(40)
    job = widget.run()
    assert isinstance(job, Job) and widget.job is job and widget.worker is job.worker
    assert job.methods == ["idw"] and job.density == 0.4 and job.source == "itaipu_landsat8_B234_768"
    assert job.placement["scale"] == (30.0, 30.0)
    wait_for(qtbot, widget)
    assert widget.worker is None and "idw 40%" in job.scores


def test_docked_through_napari(make_napari_viewer, qtbot):
    """napari docks the widget with a proxy viewer; pickers must still find the layers it makes."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    viewer.open_sample("napari-convnp", "itaipu")
    widget.image_combo.value = viewer.layers["itaipu_landsat8_B234_768"]
    mask = widget.simulate()
    assert mask is not None and widget.mask_combo.value.name == mask.name
    choose(widget, "idw")
    widget.run()
    wait_for(qtbot, widget)
    assert "idw mean" in viewer.layers and widget.table.rowCount() == 1


def test_in_memory_results_of_an_integer_scene_are_clipped_to_its_type(widget, qtbot, monkeypatch):
    """Issue 24: a fill's values beyond the source type's range (a uint8 scene's fill at -15 or 278) are clipped in
    the widget's results as in every file output."""
    from napari_convnp import _run

    real = _run.fill

    def overshooting(bands, mask, **options):
        result = real(bands, mask, **options)
        filled = np.broadcast_to(mask, result.mean.shape)
        result.mean[filled] = np.where(np.arange(filled.sum()) % 2, 278.0, -15.0)
        return result

    monkeypatch.setattr(_run, "fill", overshooting)
    widget.load(SAMPLES / "sf_bay_landsat7_768.tif")
    qtbot.waitUntil(lambda: widget.image_combo.value is not None, timeout=60_000)
    assert np.dtype(widget._scene()[1].source_dtype) == np.uint8
    widget.simulate()
    choose(widget, "idw")
    widget.run()
    wait_for(qtbot, widget)
    mean = widget.viewer.layers["idw mean"].data
    assert np.nanmin(mean) == 0 and np.nanmax(mean) == 255


def test_a_filled_mean_comes_with_an_rgb_composite_on_the_scenes_map(widget, qtbot):
    """Issue 25.5: results were grey single bands only; a filled mean is also shown as the scene's default composite,
    so seams can be judged in colour, placed where the scene's own composite is."""
    widget.load(SAMPLES / "sf_bay_landsat7_768.tif")
    qtbot.waitUntil(lambda: widget.image_combo.value is not None, timeout=60_000)
    widget.simulate()
    choose(widget, "idw")
    widget.run()
    wait_for(qtbot, widget)
    bands = widget.image_combo.value
    rgb = widget.viewer.layers["idw RGB"]
    assert rgb.rgb and rgb.data.dtype == np.uint8 and rgb.data.shape == (*bands.data.shape[-2:], 3)
    assert tuple(rgb.scale) == tuple(bands.scale[-2:]) and tuple(rgb.translate) == tuple(bands.translate[-2:])
    mean = widget.viewer.layers["idw mean"].data
    known = np.isfinite(mean).all(0)
    red = rgb.data[..., 0][known].astype(float)
    assert max(np.corrcoef(red, band[known])[0, 1] for band in mean) > 0.9  # the fill, stretched
