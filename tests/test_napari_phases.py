"""Issue 25, items 2 and 6 in the widget: a mask layer inverted at Run (its 0 = fill), and every phase of a run
named in the status line, the progress bar and napari's activity dock, with the pixel passes off the GUI thread."""
from __future__ import annotations

import numpy as np

from napari_convnp._layers import RESULT_KEY
from napari_convnp._napari import SCENE_KEY
from napari_convnp.scene import Scene

from .conftest import SAMPLES, choose, wait_for

ITAIPU = "itaipu_landsat8_B234_768"


def _valid_pixels(shape) -> np.ndarray:
    """A mask that marks the valid pixels (1), as a QA band or the STS-CNN masks do: stripes of 0 to fill."""
    valid = np.ones(shape, np.uint8)
    valid[:, 100:112] = 0
    valid[300:310, :] = 0
    return valid


def _click_run(widget, qtbot, *methods):
    """Tick the methods, press Run as a user does (the button, not the slot), wait; the job and what the status
    line and the activity dock said on the way."""
    choose(widget, *methods)
    said = []
    widget._progress.changed.connect(lambda done, total, text: said.append((done, total, text)))
    widget.run_button.click()
    job = widget.job
    assert job is not None and widget.worker is not None, "Run did not start a fill"
    described = []
    widget._activity.bar.events.description.connect(lambda event: described.append(event.value))
    wait_for(qtbot, widget)
    return job, said, described


def _changes(texts: list[str]) -> list[str]:
    """The texts without those equal to the one before."""
    return [text for i, text in enumerate(texts) if i == 0 or text != texts[i - 1]]


def test_run_names_each_phase_in_the_status_the_bar_and_the_activity_dock(widget, qtbot):
    from napari.utils import progress

    widget.load(SAMPLES / f"{ITAIPU}.tif")
    widget.simulate()
    job, said, described = _click_run(widget, qtbot, "idw")
    texts = [text for _, _, text in said]
    assert texts[0] == "preparing the mask 'simulated SLC-off'"
    assert [entry for entry in said if entry[2].startswith("idw: band")] == [
        (0, 3, "idw: band 1 of 3"), (1, 3, "idw: band 2 of 3"), (2, 3, "idw: band 3 of 3")]
    assert texts.index("checking the mask and the known pixels") < texts.index("idw: band 1 of 3")
    assert texts[-1] == "idw: scoring and display limits"
    # the activity dock's bar said the same: the worker's phases in the same order (the two lines said as Run is
    # pressed may reach the bar, which the press makes, before the test listens to it, or in either order)
    # (a text said twice running, a count throttled by time under load, changes the bar's description once)
    worker_phases = _changes(texts[texts.index("checking the mask and the known pixels"):])
    assert _changes(described)[-len(worker_phases):] == worker_phases and set(described) <= set(texts)
    assert widget._activity is None and not any(bar.desc.startswith("filling") for bar in progress._all_instances)
    assert widget.status.text().startswith("idw done in") and "idw" in job.scores


def test_two_methods_say_which_of_them_runs(widget, qtbot):
    widget.load(SAMPLES / f"{ITAIPU}.tif")
    widget.simulate()
    _, said, _ = _click_run(widget, qtbot, "idw", "gauss")
    texts = [text for _, _, text in said]
    assert "idw: band 2 of 3 (method 1 of 2)" in texts and "gauss: band 2 of 3 (method 2 of 2)" in texts


def test_an_inverted_mask_fills_its_zero_pixels_and_the_results_say_so(widget, qtbot):
    widget.load(SAMPLES / f"{ITAIPU}.tif")
    viewer = widget.viewer
    valid = viewer.add_labels(_valid_pixels((768, 768)), name="valid")
    widget.mask_combo.value = valid
    widget.invert_mask.setChecked(True)
    job, _, _ = _click_run(widget, qtbot, "idw")
    np.testing.assert_array_equal(job.mask, np.broadcast_to(valid.data == 0, job.scene.shape))
    assert job.pixels == int((valid.data == 0).sum()) and job.mask_name == "valid inverted"
    inverted = viewer.layers["idw mean"]
    assert inverted.metadata[RESULT_KEY]["mask"] == "valid inverted"
    assert "in 'valid inverted'" in widget.scores_caption.text()
    # the same pixels marked 1 in a mask of their own, not inverted: the same fill, in a layer named apart
    widget.mask_combo.value = viewer.add_labels((valid.data == 0).astype(np.uint8), name="stripes")
    widget.invert_mask.setChecked(False)
    _click_run(widget, qtbot, "idw")
    plain = viewer.layers["idw mean · stripes"]
    np.testing.assert_array_equal(plain.data, inverted.data)
    assert viewer.layers["idw mean"].metadata[RESULT_KEY]["mask"] == "valid inverted"  # kept, not replaced


def test_an_inverted_mask_file_fills_nothing_where_the_file_has_no_data(widget, qtbot):
    """A mask file's nodata (off its footprint) is 0 in its Labels layer; inverted, it is still no pixel to fill,
    as with the CLI's --invert-mask."""
    widget.load(SAMPLES / f"{ITAIPU}.tif")
    valid = _valid_pixels((768, 768))
    off_file = np.zeros((1, 768, 768), bool)
    off_file[:, :, :200] = True  # the mask file has no data over the left columns
    valid[off_file[0]] = 0
    file_scene = Scene(np.where(off_file, np.nan, valid).astype(np.float32), ["valid"], off_file)
    widget.mask_combo.value = widget.viewer.add_labels(valid, name="valid", metadata={SCENE_KEY: file_scene})
    widget.invert_mask.setChecked(True)
    job, _, _ = _click_run(widget, qtbot, "idw")
    assert not job.mask[:, :, :200].any() and job.mask[:, 300:310, 200:].all()


def test_a_mask_that_marks_nothing_is_one_notification_from_the_worker(widget, qtbot, messages):
    widget.load(SAMPLES / f"{ITAIPU}.tif")
    widget.mask_combo.value = widget.viewer.add_labels(np.ones((768, 768), np.uint8), name="all valid")
    widget.invert_mask.setChecked(True)  # every pixel valid: inverted, none to fill
    _click_run(widget, qtbot, "idw")
    assert messages == ["fill failed: mask: the mask is empty: no pixel is marked to fill"]
    assert "idw mean" not in widget.viewer.layers
    assert widget.progress.maximum() == 1 and widget.run_button.isEnabled()


def test_run_leaves_the_pixel_passes_to_the_worker_and_the_gui_keeps_turning(widget, qtbot, monkeypatch):
    """The mask's check and count, the scores, the display limits and the RGB composite are passes over the whole
    scene (seconds on a large one): they run in the worker, and a 10 ms QTimer on the GUI thread keeps ticking
    from the click on Run to the last result layer (only napari's own making of the layers is left there)."""
    import threading
    import time

    from qtpy.QtCore import QTimer

    from napari_convnp import _run, masks
    from napari_convnp._napari import scene_layers

    h, w = 1500, 1500
    y, x = np.ogrid[0:h, 0:w]
    bands = np.stack([1000 + 300 * np.sin(x / 40.0 + b) * np.cos(y / 55.0 - b) for b in range(4)]).astype(np.float32)
    scene = Scene(bands, ["B1", "B2", "B3", "B4"], np.zeros(bands.shape, bool))
    for data, kwargs, _ in scene_layers(scene):
        widget.viewer.add_image(data, **kwargs)
    layer = widget.viewer.layers[scene.name]
    widget.image_combo.value = layer
    stripes = masks.simulate_slc_off((h, w), seed=0, pixel_size=30)
    widget._add_mask(np.broadcast_to(stripes, bands.shape), "gaps", layer, scene)
    on_gui = []
    for owner, name in ((_run.Job, "prepare"), (_run, "_display"), (_run.metrics, "scores")):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, real=real, name=name, **k: (
            on_gui.append((name, threading.current_thread() is threading.main_thread())), real(*a, **k))[1])
    ticks = []
    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    heartbeat.start()
    qtbot.wait(50)
    start = time.perf_counter()
    job, _, _ = _click_run(widget, qtbot, "idw")
    qtbot.wait(50)  # the last result layer drawn
    end = time.perf_counter()
    heartbeat.stop()
    assert on_gui == [("prepare", False), ("scores", False), ("_display", False)]
    assert "idw RGB" in widget.viewer.layers and job.pixels == int(stripes.sum())
    longest_gap = max(np.diff([start, *(t for t in ticks if start < t < end), end]))
    assert longest_gap < 1.0, f"the GUI stalled {longest_gap:.2f} s in a run of {end - start:.1f} s"
