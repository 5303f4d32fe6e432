"""The widget driven headless, as a user would: load → mask → inpaint → layers; cancel; bad files."""
import numpy as np
import pytest

from napari_convnp._napari import get_reader, write_image
from napari_convnp._widget import GapFillWidget
from napari_convnp.scene import read_scene

from .conftest import SAMPLES


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    return GapFillWidget(viewer)


def wait_for(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def test_sample_data_and_reader(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-convnp", "sf_bay")
    names = [layer.name for layer in viewer.layers]
    assert "sf_bay_landsat7_768" in names and any(layer.rgb for layer in viewer.layers)
    bands = viewer.layers["sf_bay_landsat7_768"]
    assert bands.data.shape == (3, 768, 768)
    assert get_reader(str(SAMPLES / "sf_bay_landsat7_768.tif")) is not None
    assert get_reader("notes.txt") is None


def test_load_detect_inpaint(widget, qtbot, tmp_path, monkeypatch):
    widget.load(SAMPLES / "LE07_L2SP_225078_20110306_slc_off_B1.tif")
    viewer = widget.viewer
    source = viewer.layers["LE07_L2SP_225078_20110306_slc_off_B1"]
    assert widget.image_combo.value is source
    mask_layer = widget.detect()
    assert mask_layer.data.shape == source.data.shape and 0.3 < mask_layer.data.mean() < 0.5
    for method, box in widget.method_boxes.items():
        box.setChecked(method in ("convnp", "idw"))
    widget.show_std.setChecked(True)
    widget.run()
    wait_for(qtbot, widget)
    mean = viewer.layers["LE07_L2SP_225078_20110306_slc_off_B1 convnp mean"]
    var = viewer.layers["LE07_L2SP_225078_20110306_slc_off_B1 convnp variance"]
    assert "LE07_L2SP_225078_20110306_slc_off_B1 convnp std" in viewer.layers
    assert "LE07_L2SP_225078_20110306_slc_off_B1 idw mean" in viewer.layers
    gaps = mask_layer.data.astype(bool)
    assert mean.data.shape == source.data.shape and np.isfinite(mean.data[gaps]).all()
    assert np.array_equal(mean.data[~gaps & np.isfinite(source.data)], source.data[~gaps & np.isfinite(source.data)])
    assert (var.data[gaps] > 0).all() and var.colormap.name == "magma"
    assert widget.table.rowCount() == 0  # real gaps: no truth, no scores
    # the writer keeps the georeferencing of the source scene
    out = tmp_path / "filled.tif"
    write_image(str(out), mean.data, {"metadata": mean.metadata})
    assert read_scene(out).geo_tags == read_scene(SAMPLES / "LE07_L2SP_225078_20110306_slc_off_B1.tif").geo_tags
    assert widget.save(var, tmp_path / "variance.tif")
    np.testing.assert_array_equal(read_scene(tmp_path / "variance.tif").bands, var.data)
    # never over the input file
    messages = []
    monkeypatch.setattr("napari_convnp._widget._notify_error", messages.append)
    src = SAMPLES / "LE07_L2SP_225078_20110306_slc_off_B1.tif"
    before = src.read_bytes()
    assert not widget.save(source, src) and "overwrite the input" in messages[0]
    assert src.read_bytes() == before
    # a second run with another density adds its own layers, the first stay
    widget.density.setValue(50)
    widget.run()
    wait_for(qtbot, widget)
    assert "LE07_L2SP_225078_20110306_slc_off_B1 convnp 50% mean" in viewer.layers
    assert "LE07_L2SP_225078_20110306_slc_off_B1 convnp mean" in viewer.layers


def test_simulate_and_compare(widget, qtbot):
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    mask = widget.simulate()
    assert mask.metadata["simulated"] and 0.1 < mask.data.mean() < 0.35
    for method, box in widget.method_boxes.items():
        box.setChecked(method in ("idw", "gauss"))
    widget.run()
    wait_for(qtbot, widget)
    assert widget.table.rowCount() == 2
    psnr = float(widget.table.item(0, 1).text())
    assert 15 < psnr < 60
    widget.grid_button.setChecked(True)
    assert widget.viewer.grid.enabled


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


def test_cancel(widget, qtbot, monkeypatch):
    monkeypatch.setattr("napari_convnp.inpaint.DEFAULT_TILE", 64)
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() >= 1, timeout=60_000)
    widget.cancel()
    wait_for(qtbot, widget)
    assert widget.status.text() == "cancelled"
    assert widget.progress.value() < widget.progress.maximum()
    assert not [layer for layer in widget.viewer.layers if "convnp mean" in layer.name]


def test_bad_file_is_a_notification(widget, tmp_path, monkeypatch):
    messages = []
    monkeypatch.setattr("napari_convnp._widget._notify_error", messages.append)
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    widget.load(bad)
    assert messages and "broken.tif" in messages[0]
    widget.run()  # nothing loaded: a message, not a traceback
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
    assert len(rgb) == 1 and "5-4-3" in rgb[0].name
    assert rgb[0].data.min() >= 0 and rgb[0].data.max() <= 1


def test_removing_layers_while_a_fill_runs(widget, qtbot, monkeypatch):
    """The user deletes the scene and its mask mid-run: the results still arrive, nothing crashes."""
    from napari_convnp import baselines

    slow_idw = baselines.METHODS["idw"]
    monkeypatch.setitem(baselines.METHODS, "idw", lambda b, c: (__import__("time").sleep(0.5), slow_idw(b, c))[1])
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    for method, box in widget.method_boxes.items():
        box.setChecked(method == "idw")
    widget.run()
    widget.viewer.layers.clear()
    wait_for(qtbot, widget)
    assert "itaipu_landsat8_B234_768 idw mean" in widget.viewer.layers
    assert widget.run_button.isEnabled()


def test_an_error_in_the_worker_is_a_notification(widget, qtbot, monkeypatch):
    """torch raises RuntimeError; the thread worker would drop it silently and never finish."""
    from napari_convnp import baselines

    def broken(bands, context):
        raise RuntimeError("simulated failure deep inside")

    monkeypatch.setitem(baselines.METHODS, "idw", broken)
    messages = []
    monkeypatch.setattr("napari_convnp._widget._notify_error", messages.append)
    widget.load(SAMPLES / "itaipu_landsat8_B234_768.tif")
    widget.simulate()
    for method, box in widget.method_boxes.items():
        box.setChecked(method == "idw")
    widget.run()
    wait_for(qtbot, widget, timeout=30_000)
    assert widget.run_button.isEnabled()
    assert messages and "simulated failure" in messages[-1]
