"""Issue 25, items 3, 7 and 8: results that are kept, scores that accumulate, variances that compare by eye."""
import numpy as np
from qtpy.QtCore import Qt

from napari_convnp._layers import OWN_LIMITS_KEY, RESULT_KEY

from .conftest import run


def column(widget, name):
    header = [widget.table.horizontalHeaderItem(c).text() for c in range(widget.table.columnCount())]
    return [widget.table.item(r, header.index(name)).text() for r in range(widget.table.rowCount())]


def test_a_run_with_another_mask_keeps_the_earlier_results_unless_told_to_replace(widget, qtbot, smooth_scene):
    widget.load(smooth_scene)
    simulated = widget.simulate()
    run(widget, qtbot, "idw")
    first = np.array(widget.viewer.layers["idw mean"].data)
    painted = widget.new_paint_layer()
    painted.data[40:80, 50:120] = 1
    widget.mask_combo.value = painted
    run(widget, qtbot, "idw")
    layers = widget.viewer.layers
    assert "idw mean · painted" in layers  # named by what differs
    np.testing.assert_array_equal(layers["idw mean"].data, first)  # the scored run is still there
    assert layers["idw mean"].metadata[RESULT_KEY]["mask"] == simulated.name
    assert layers["idw mean"].visible and layers["idw mean · painted"].visible  # new layers shown once made
    layers["idw mean"].visible = False  # the user hides the earlier result
    widget.mask_combo.value = simulated
    run(widget, qtbot, "idw")  # the very same settings: its own layer replaced, no third one
    assert [lay.name for lay in layers if lay.name.startswith("idw mean")] == ["idw mean", "idw mean · painted"]
    assert not layers["idw mean"].visible  # and left hidden
    assert column(widget, "mask") == [simulated.name, "painted"]  # a row per run, as the layers


def test_replace_earlier_results_takes_over_the_layer_of_another_mask(widget, qtbot, smooth_scene):
    widget.load(smooth_scene)
    widget.simulate()
    run(widget, qtbot, "idw")
    painted = widget.new_paint_layer()
    painted.data[40:80, 50:120] = 1
    widget.mask_combo.value = painted
    widget.replace_results.setChecked(True)
    run(widget, qtbot, "idw")
    means = [lay for lay in widget.viewer.layers if lay.name.startswith("idw mean")]
    assert [lay.name for lay in means] == ["idw mean"] and means[0].metadata[RESULT_KEY]["mask"] == "painted"
    assert column(widget, "mask") == ["painted"]  # its score row replaced too


def test_the_score_table_accumulates_runs_with_nll_and_coverage_and_sorts(widget, qtbot, smooth_scene):
    widget.load(smooth_scene)
    widget.simulate()
    run(widget, qtbot, "convnp", "idw")
    widget.density.setValue(50)
    run(widget, qtbot, "convnp")
    assert column(widget, "method") == ["convnp", "idw", "convnp 50%"]
    assert column(widget, "density") == ["100%", "100%", "50%"]
    assert set(column(widget, "mask")) == {"simulated SLC-off"} and set(column(widget, "reference")) == {"none"}
    nll, coverage = column(widget, "NLL"), column(widget, "95 % cov.")
    assert nll[1] == coverage[1] == "–"  # idw has no variance
    for row in (0, 2):
        assert np.isfinite(float(nll[row])) and 50 <= float(coverage[row].rstrip("%")) <= 100
    scores = widget.job.scores["convnp 50%"]
    assert float(nll[2]) == round(scores["nll"], 3)
    widget.table.sortItems(1, Qt.SortOrder.DescendingOrder)  # a click on "PSNR dB"
    psnr = [float(v) for v in column(widget, "PSNR dB")]
    assert psnr == sorted(psnr, reverse=True)
    widget.table.sortItems(4, Qt.SortOrder.AscendingOrder)  # NLL: missing values last
    assert column(widget, "NLL")[-1] == "–"


def test_the_score_table_shows_seven_rows_without_scrolling(widget, qtbot, smooth_scene):
    widget.load(smooth_scene)
    widget.simulate()
    widget.show()
    qtbot.waitExposed(widget)
    methods = ["idw", "gauss", "harmonic", "biharmonic", "telea", "ns"]
    run(widget, qtbot, *methods)
    widget.density.setValue(60)
    run(widget, qtbot, "idw")
    qtbot.wait(50)
    assert widget.table.rowCount() == 7
    assert widget.table.verticalScrollBar().maximum() == 0  # every row in view


def test_variance_layers_of_one_scene_share_contrast_limits(widget, qtbot, smooth_scene):
    widget.load(smooth_scene)
    widget.simulate()
    run(widget, qtbot, "convnp")
    widget.density.setValue(5)
    assert widget.density_label.text() == "5 % of the known pixels used"  # its meaning beside the slider
    run(widget, qtbot, "convnp")
    full, sparse = widget.viewer.layers["convnp variance"], widget.viewer.layers["convnp 5% variance"]
    assert sparse.metadata[OWN_LIMITS_KEY][1] > full.metadata[OWN_LIMITS_KEY][1]  # less context: less sure
    assert tuple(full.contrast_limits) == tuple(sparse.contrast_limits) == (0.0, sparse.metadata[OWN_LIMITS_KEY][1])
    assert tuple(widget.viewer.layers["convnp mean"].contrast_limits) != tuple(full.contrast_limits)  # means apart


# --- issue 25.10: saving through napari, and a warning about the reference -----------------------------------

def test_file_save_offers_the_plugins_georeferenced_writer_first_and_results_carry_provenance(widget, qtbot,
                                                                                             smooth_scene, tmp_path):
    from napari.plugins import _npe2

    from napari_convnp.scene import read_scene
    from napari_convnp.tiffread import read_provenance

    viewer = widget.viewer
    viewer.open_sample("napari-convnp", "sf_bay")  # a command of the plugin: npe2 activates it
    widget.load(smooth_scene)
    widget.simulate()
    run(widget, qtbot, "idw")
    mean, mask = viewer.layers["idw mean"], widget.mask_combo.value
    for layer in (mean, mask):
        filters, _ = _npe2.file_extensions_string_for_layers([layer])
        assert filters.startswith("ConvNP Landsat gap filling GeoTIFF"), filters  # the dialog's default
    viewer.layers.selection = {mean}
    [saved] = viewer.layers.save(str(tmp_path / "mean.tif"), selected=True)  # no writer named: the first one
    scene, source = read_scene(saved), read_scene(smooth_scene)
    assert scene.source_dtype == "float32" and scene.geo_tags == source.geo_tags  # not napari's uint32 sans map
    items = read_provenance(saved)
    assert items["OUTPUT"] == "idw mean" and items["METHOD"] == "idw" and items["SOURCE"] == source.name
    assert items["MASK"] == mask.name and items["VERSION"].startswith("napari-convnp ")
    viewer.layers.selection = {mask}
    [saved_mask] = viewer.layers.save(str(tmp_path / "mask.tif"), selected=True)
    assert read_provenance(saved_mask)["OUTPUT"] == mask.metadata[RESULT_KEY]["kind"]
    viewer.layers.selection = {viewer.layers[source.name]}
    [plain] = viewer.layers.save(str(tmp_path / "scene.tif"), selected=True)
    assert read_provenance(plain) == {}  # a scene saved as it is was made by no fill


def test_a_poor_reference_is_said_in_the_status_line(widget, qtbot, tmp_path):
    from napari_convnp.scene import Scene, write_scene

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128] / 9.0
    scene = np.stack([np.sin(x + 1) * np.cos(y), np.cos(x * 0.7 - y)]).astype(np.float32) * 300 + 1000
    elsewhere = rng.normal(1000, 300, scene.shape).astype(np.float32)
    for name, bands in (("scene.tif", scene), ("elsewhere.tif", elsewhere)):
        write_scene(Scene(bands, ["band 1", "band 2"], np.zeros(bands.shape, bool)), tmp_path / name)
    widget.load(tmp_path / "elsewhere.tif")
    widget.load(tmp_path / "scene.tif")
    widget.simulate()
    widget.reference_combo.value = widget.viewer.layers["elsewhere"]
    run(widget, qtbot, "regression")
    assert "reference elsewhere predicts the scene poorly where both are known" in widget.status.text()


def test_every_layer_of_a_georeferenced_run_shares_its_units(widget, qtbot, smooth_scene):
    """Issue 25.10: napari toasts 'Inconsistent units across layers' where layers' units differ. The scene, its
    composite, the masks (simulated, painted, combined) and the results, RGB composites too, are all in metres."""
    widget.load(smooth_scene)
    simulated = widget.simulate()
    run(widget, qtbot, "idw")
    painted = widget.new_paint_layer()
    painted.data[:10, :10] = 1
    widget.mask_combo.value, widget.other_combo.value = simulated, painted
    widget.combine()
    layers = widget.viewer.layers
    assert len(layers) >= 6 and layers.extent.units is not None  # None: napari found them inconsistent
    assert {str(layer.units[-1]) for layer in layers} == {"meter"}
