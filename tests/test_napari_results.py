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
    run(widget, qtbot, "idw")  # the very same settings: its own layer replaced, no third one
    assert [lay.name for lay in layers if lay.name.startswith("idw mean")] == ["idw mean", "idw mean · painted"]
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
