"""The dock widget: its layout and the wiring of its signals — load, mask, inpaint, compare, save. The run is in
`_run.py`, the layers it makes in `_layers.py`, the tooltips in `_tooltips.py`."""
from __future__ import annotations

import collections
import dataclasses
import functools
from pathlib import Path
from typing import Callable

import numpy as np
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import _run, masks, options
from ._layers import (
    NAME_BUDGET,
    NEEDS_REFERENCE,
    RESULT_KEY,
    InputError,
    _canvas_grid,
    _is_bands,
    _is_composite,
    _is_mask,
    _is_savable,
    _mask_colours,
    add_mask_layer,
    default_filename,
    enter_grid,
    full_data,
    label_cells,
    layer_scene,
    leave_grid,
    levels,
    result_layer,
    share_limits,
    show_scale_bar,
    variance_colormap,
)
from ._napari import (
    COMPOSITE_KEY,
    SCENE_KEY,
    composite_name,
    composites,
    fit_placement,
    georeference,
    layer_placement,
    rgb_composite,
)
from ._pickers import LayerPicker, button, invert_box
from ._reader import READER_PATTERNS, prefer_this_reader, preferred_reader_patterns
from ._run import ActivityBar, Failure, Job, _device_choices, _device_note, _Progress, calibration_note
from ._scores import ScoreTable
from ._tooltips import TOOLTIPS, method_description
from ._water import WaterPanel
from ._writer import write_image
from .adapt import DEFAULT_STEPS
from .errors import ConvNPError
from .reference import grid_offset
from .scene import Scene, SceneError, read_scene, scene_shape

# milliseconds between the GUI-thread steps of a run's end (`_later`): with 0 the next step could run in the same turn
# of Qt's loop as the last one's drawing, before anything else queued (a click, a repaint), and two layers' work then
# froze the GUI as one (0.3 s on a 4096² scene, against 0.15 s for one layer)
STEP_GAP_MS = 20


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def _reports_input_errors(slot):
    """A button's slot: bad input (ours, a scene's, a mask's, fill's) becomes one notification; returns None."""

    @functools.wraps(slot)
    def wrapper(self, *args, **kwargs):
        try:
            return slot(self, *args, **kwargs)
        except ConvNPError as err:
            _notify_error(str(err))
            return None

    return wrapper


class GapFillWidget(QWidget):
    """Fill the gaps of a Landsat scene with the ConvNP or a classical method."""

    def __init__(self, napari_viewer):
        super().__init__()
        # napari hands a docked widget a proxy that wraps every object it returns anew, so `is` would never
        # hold between two looks at one layer; the widget compares layers by identity, so it keeps the viewer.
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.job: Job | None = None
        self._pickers: list[LayerPicker] = []
        self._grid_hidden: list = []  # layers Side by side hid (masks, composites), shown again after
        self._grid_shown: list = []  # and the hidden bands layer it showed, hidden again after
        self._task = None  # reading or detecting a whole scene in a thread worker
        self._activity = None  # the running fill's bar in napari's activity dock
        self._steps = collections.deque()  # what a run's end does on the GUI thread, a step a turn (`_later`)
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)
        for event in ("inserted", "removed", "moved", "reordered"):
            getattr(self.viewer.layers.events, event).connect(self._refresh_pickers)
        self.viewer.layers.events.inserted.connect(self._watch_layer)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_pickers)
        self.grid = _canvas_grid(self.viewer)
        self.grid.events.enabled.connect(self._on_grid)
        layout = QVBoxLayout(self)
        layout.addWidget(self._scene_box())
        layout.addWidget(self._mask_box())
        layout.addWidget(self._inpaint_box())
        layout.addWidget(self._save_box())
        self.water = WaterPanel(self, _reports_input_errors)  # 5. Water, after a fill
        layout.addWidget(self.water)
        layout.addStretch(1)
        self._on_scene_changed(self.image_combo.value)

    @property
    def worker(self):
        """The running thread worker (a fill, or reading or detecting a whole scene), None when idle."""
        return (self.job.worker if self.job is not None else None) or self._task

    def _in_background(self, what: str, work: Callable, done: Callable, *, whole_scene: bool):
        """done(work()). For a whole scene, work runs in a thread worker (the status says what, the progress bar
        is busy) and done follows on the GUI thread, so napari stays responsive through the 10–20 s that
        reading or detecting one takes; anything smaller runs at once and done's result is returned."""
        if not whole_scene:
            return done(work())
        if self.worker is not None:
            raise InputError("busy: wait until the current task ends (or cancel the fill)")
        from napari.qt.threading import create_worker

        def finished():
            _run.end_background_work()
            self._task = None
            self.progress.setRange(0, 1)
            if self.status.text().endswith("…"):
                self.status.setText("")

        self._task = create_worker(work, _ignore_errors=True)
        self._task.returned.connect(lambda result: _reports_input_errors(lambda _, r: done(r))(self, result))
        self._task.errored.connect(lambda err: _notify_error(f"{what} failed: {err}"))
        self._task.finished.connect(finished)
        self.status.setText(f"{what}…")
        self.progress.setRange(0, 0)
        _run.start_background_work()  # ended by finished
        self._task.start()
        return self._task

    # --- layer pickers, one helper and one event path for all -----------------------------------------
    def _picker(self, accepts, *, none: str | None = None, tooltip: str = "", on_change=None) -> LayerPicker:
        picker = LayerPicker(self.viewer, accepts, none=none, tooltip=tooltip)
        if on_change is not None:
            picker.changed.connect(on_change)
        self._pickers.append(picker)
        return picker

    def _refresh_pickers(self, *_):
        for picker in self._pickers:
            try:
                picker.refresh()
            except RuntimeError:  # the widget was closed and Qt deleted the combo box
                pass

    def _watch_layer(self, event):
        event.value.events.name.connect(self._refresh_pickers)

    # --- 1. scene --------------------------------------------------------------------------------------
    def _scene_box(self):
        box = QGroupBox("1. Scene")
        form = QFormLayout(box)
        row = QHBoxLayout()
        for text, slot, tip in (
                ("Open file…", self._open_file, "open file"),
                ("Open product folder…", self._open_folder, "open folder")):
            row.addWidget(button(text, slot, TOOLTIPS[tip]))
        form.addRow(row)
        self.image_combo = self._picker(
            _is_bands, on_change=self._on_scene_changed,
            tooltip=TOOLTIPS["bands layer"])
        form.addRow("Bands layer", self.image_combo)
        self.composite = QComboBox()
        self.composite.setToolTip(TOOLTIPS["composite"])
        self.composite.currentTextChanged.connect(self._show_composite)
        form.addRow("RGB composite", self.composite)
        self.reader_pref = QCheckBox("open .tif files with this plugin")
        self.reader_pref.setToolTip(TOOLTIPS["reader preference"])
        self.reader_pref.setChecked(self._reader_preferred())
        self.reader_pref.toggled.connect(prefer_this_reader)
        form.addRow(self.reader_pref)
        return box

    @staticmethod
    def _reader_preferred() -> bool:
        try:
            return set(preferred_reader_patterns()) == set(READER_PATTERNS)
        except Exception:  # noqa: BLE001 - settings unavailable: show it off
            return False

    @_reports_input_errors
    def load(self, path):
        """Open a GeoTIFF or product folder (a whole scene in a thread worker); a bad file becomes a
        notification."""
        from ._napari import scene_layers

        def read():
            scene = read_scene(path)
            return scene, scene_layers(scene)

        def show(loaded):
            scene, layers = loaded
            added = [self.viewer.add_image(data, **kwargs) for data, kwargs, _ in layers]
            bands = next(layer for layer in added if not layer.rgb)
            if georeference(scene):
                show_scale_bar(self.viewer)
            self.image_combo.value = bands

        c, h, w = scene_shape(path)
        return self._in_background(f"reading {Path(path).name}", read, show,
                                   whole_scene=_run.whole_scene(c * h * w))

    def _open_file(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open a Landsat GeoTIFF", "", "GeoTIFF (*.tif *.tiff *.TIF)")
        if path:
            self.load(path)

    def _open_folder(self):
        path = QFileDialog.getExistingDirectory(self, "Open a Landsat product folder")
        if path:
            self.load(path)

    def _scene(self):
        """The chosen bands layer, its scene and its source scene; InputError when there is none."""
        layer = self.image_combo.value
        if layer is None:
            raise InputError("no bands layer: open a scene first (Open file…, drag and drop, or a sample)")
        scene, source = layer_scene(layer)
        return layer, scene, source

    def _on_scene_changed(self, layer):
        self._clear_scores()
        self._refresh_composites()

    def _refresh_composites(self):
        """Offer the composites the chosen scene has bands for; select the one shown, else the default."""
        layer = self.image_combo.value
        choices, shown = {}, None
        if layer is not None:
            try:
                scene, source = layer_scene(layer)
                choices = composites(source or scene)
                shown = next((lay.metadata[COMPOSITE_KEY] for lay in self.viewer.layers
                              if _is_composite(lay) and lay.metadata.get(SCENE_KEY) is (source or scene)), None)
            except (SceneError, ValueError):
                choices = {}
        self.composite.blockSignals(True)
        self.composite.clear()
        self.composite.addItems(list(choices))
        if shown in choices:
            self.composite.setCurrentText(shown)
        self.composite.setEnabled(bool(choices))
        self.composite.setPlaceholderText("none: fewer than 3 bands" if layer is not None else "")
        self.composite.blockSignals(False)

    @_reports_input_errors
    def _show_composite(self, choice: str):
        if not choice:
            return None
        layer, scene, source = self._scene()
        source = source or scene
        data = rgb_composite(source, choice)
        if data is None:  # only offered choices reach here; keep the menu honest anyway
            self._refresh_composites()
            raise InputError(f"{layer.name} has no bands for the composite {choice}")
        name = composite_name(layer.name, choice)
        existing = next((lay for lay in self.viewer.layers
                         if _is_composite(lay) and lay.metadata.get(SCENE_KEY) is source), None)
        if existing is not None:
            existing.data, existing.name = data, name
            existing.metadata[COMPOSITE_KEY] = choice
            return existing
        return self.viewer.add_image(data, name=name, rgb=True, metadata={SCENE_KEY: source, COMPOSITE_KEY: choice},
                                     **fit_placement(layer_placement(layer), 2))

    # --- 2. mask ---------------------------------------------------------------------------------------
    def _mask_box(self):
        box = QGroupBox("2. Mask (pixels to fill)")
        form = QFormLayout(box)
        row = QHBoxLayout()
        for text, slot, tip in (
                ("Detect gaps", self.detect, "detect"),
                ("Simulate SLC-off", self.simulate, "simulate"),
                ("New paint layer", self.new_paint_layer, "paint")):
            row.addWidget(button(text, slot, TOOLTIPS[tip]))
        form.addRow(row)
        self.seed = QSpinBox()
        self.seed.setRange(0, 10**6)
        self.seed.setToolTip(TOOLTIPS["seed"])
        form.addRow("Simulation seed", self.seed)
        self.mask_combo = self._picker(_is_mask, on_change=lambda _: self._clear_status(),
                                       tooltip=TOOLTIPS["mask layer"])
        self.invert_mask = invert_box(TOOLTIPS["invert mask"])
        row = QHBoxLayout()
        row.addWidget(self.mask_combo, 1)
        row.addWidget(self.invert_mask)
        form.addRow("Mask layer", row)
        row = QHBoxLayout()
        self.combine_op = QComboBox()
        self.combine_op.addItems(["union with", "subtract"])
        self.combine_op.setToolTip(TOOLTIPS["combine op"])
        row.addWidget(self.combine_op)
        self.other_combo = self._picker(_is_mask, tooltip=TOOLTIPS["other mask"])
        row.addWidget(self.other_combo, 1)
        row.addWidget(button("Combine", self.combine, TOOLTIPS["combine"]))
        form.addRow(row)
        return box

    def _add_mask(self, mask: np.ndarray, kind: str, layer, source_scene: Scene | None, **metadata):
        """A mask layer (`add_mask_layer`), chosen; the score rows of an earlier mask of its name go with it."""
        mask_layer = add_mask_layer(self.viewer, mask, kind, layer, source_scene, **metadata)
        self.mask_combo.value = mask_layer
        self._clear_scores(mask=mask_layer.name)
        return mask_layer

    @_reports_input_errors
    def detect(self):
        layer, scene, source = self._scene()
        basis = scene if source is None else dataclasses.replace(
            scene, nodata_value=source.nodata_value, source_dtype=source.source_dtype, geo_tags=source.geo_tags)

        def show(gaps):
            if not gaps.any():
                raise InputError(f"no gaps detected in {layer.name}; simulate or paint a mask instead")
            return self._add_mask(gaps, "gaps", layer, source)

        return self._in_background(f"detecting the gaps of {layer.name}", lambda: masks.detect_scene_gaps(basis),
                                   show, whole_scene=_run.whole_scene(scene.bands.size))

    @_reports_input_errors
    def simulate(self):
        layer, scene, source = self._scene()
        stripes = masks.simulate_slc_off(scene.shape[1:], seed=self.seed.value(),
                                         pixel_size=source.pixel_size if source else None)
        hidden = np.broadcast_to(stripes, scene.shape) & ~scene.nodata  # only known pixels can be scored
        return self._add_mask(hidden, "simulated SLC-off", layer, source, simulated=True)

    @_reports_input_errors
    def new_paint_layer(self):
        layer, scene, source = self._scene()
        paint = self._add_mask(np.zeros(scene.shape[1:], np.uint8), "painted", layer, source)
        paint.mode = "paint"
        paint.brush_size = 10
        paint.selected_label = 1
        self.viewer.layers.selection.active = paint
        return paint

    @_reports_input_errors
    def combine(self):
        first, second = self.mask_combo.value, self.other_combo.value
        if first is None or second is None:
            raise InputError("choose two mask layers to combine")
        a, b = np.asarray(first.data) != 0, np.asarray(second.data) != 0
        if a.shape[-2:] != b.shape[-2:]:
            raise InputError(f"masks '{first.name}' {a.shape} and '{second.name}' {b.shape} differ in size")
        subtract = self.combine_op.currentText() == "subtract"
        combined = masks.subtract(a, b) if subtract else masks.union(a, b)
        name = f"{first.name} {'−' if subtract else '∪'} {second.name}"
        if len(name) > NAME_BUDGET:
            name = "difference of masks" if subtract else "union of masks"
        taken = {lay.name for lay in self.viewer.layers}
        base, n = name, 2
        while name in taken:  # a new layer every time: never over one of its inputs
            name, n = f"{base} {n}", n + 1
        meta = {key: first.metadata[key] for key in (SCENE_KEY,) if key in first.metadata}
        meta[RESULT_KEY] = {"source": first.metadata.get(RESULT_KEY, {}).get("source", ""), "kind": name}
        layer = self.viewer.add_labels(combined.astype(np.uint8), name=name, opacity=0.5, metadata=meta,
                                       colormap=_mask_colours(),
                                       **fit_placement(layer_placement(first), combined.ndim))
        self.mask_combo.value = layer
        self._clear_status()
        return layer

    # --- 3. inpaint ------------------------------------------------------------------------------------
    def _inpaint_box(self):
        box = QGroupBox("3. Inpaint")
        form = QFormLayout(box)
        self.reference_combo = self._picker(_is_bands, none="none (one date)", on_change=self._on_reference_changed)
        form.addRow("Reference (other date)", self.reference_combo)
        self.reference_combo.setToolTip(TOOLTIPS["reference"])
        self.method_boxes = {}
        grid = QHBoxLayout()
        column = None
        for i, method in enumerate(options.METHODS):
            if i % 3 == 0:
                column = QVBoxLayout()
                grid.addLayout(column)
            check = QCheckBox(method)
            check.setChecked(method == "convnp")
            check.setToolTip(method_description(method))
            self.method_boxes[method] = check
            column.addWidget(check)
        form.addRow("Methods", grid)
        self.density = QSlider()
        self.density.setOrientation(Qt.Orientation.Horizontal)
        self.density.setRange(1, 100)
        self.density.setValue(100)
        self.density.setToolTip(TOOLTIPS["density"])
        self.density_label = QLabel()
        self.density.valueChanged.connect(lambda v: self.density_label.setText(f"{v} % of the known pixels used"))
        self.density.valueChanged.emit(self.density.value())
        row = QHBoxLayout()
        row.addWidget(self.density)
        row.addWidget(self.density_label)
        form.addRow("Context density", row)
        row = QHBoxLayout()
        self.adapt = QCheckBox("Adapt to this scene")
        self.adapt_steps = QSpinBox()
        self.adapt_steps.setRange(1, 10_000)
        self.adapt_steps.setValue(DEFAULT_STEPS)
        self.adapt_steps.setSuffix(" steps")
        self.adapt.setToolTip(TOOLTIPS["adapt"])
        self.adapt_steps.setToolTip(TOOLTIPS["adapt"])
        row.addWidget(self.adapt)
        row.addWidget(self.adapt_steps)
        form.addRow(row)
        self.blend = QSpinBox()
        self.blend.setRange(-1, 100)
        self.blend.setValue(-1)
        self.blend.setSuffix(" %")
        self.blend.setSpecialValueText("chosen on the scene")  # shown at -1
        self.blend.setToolTip(TOOLTIPS["blend"])
        form.addRow("Biharmonic in the mean", self.blend)
        self.device = QComboBox()
        self.device.addItems(_device_choices())
        self.device.setToolTip(TOOLTIPS["device"])
        form.addRow("Device", self.device)
        form.addRow("", QLabel(_device_note()))
        self.show_std = QCheckBox("also show the std. deviation")
        self.show_std.setToolTip(TOOLTIPS["show std"])
        self.replace_results = QCheckBox("replace earlier results")
        self.replace_results.setToolTip(TOOLTIPS["replace"])
        row = QHBoxLayout()
        row.addWidget(self.show_std)
        row.addWidget(self.replace_results)
        form.addRow(row)
        row = QHBoxLayout()
        self.run_button = button("Run", self.run, TOOLTIPS["run"])
        self.cancel_button = button("Cancel", self.cancel, TOOLTIPS["cancel"])
        self.cancel_button.setEnabled(False)
        self.grid_button = QPushButton("Side by side")
        self.grid_button.setToolTip(TOOLTIPS["side by side"])
        self.grid_button.setCheckable(True)
        self.grid_button.toggled.connect(lambda on: setattr(self.grid, "enabled", on))
        for w in (self.run_button, self.cancel_button, self.grid_button):
            row.addWidget(w)
        form.addRow(row)
        self.progress = QProgressBar()
        self.progress.setToolTip(TOOLTIPS["progress"])
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addRow(self.progress)
        form.addRow(self.status)
        self.scores_caption = QLabel("")
        self.scores_caption.setWordWrap(True)
        form.addRow(self.scores_caption)
        self.table = ScoreTable()
        form.addRow(self.table)
        self._on_reference_changed(None)
        return box

    def _on_reference_changed(self, layer):
        for method, box in self.method_boxes.items():
            if method in NEEDS_REFERENCE:
                box.setEnabled(layer is not None)
                if layer is None:
                    box.setChecked(False)
                box.setToolTip(method_description(method) + ("" if layer is not None else TOOLTIPS["needs reference"]))

    def selected_methods(self) -> list[str]:
        return [m for m, box in self.method_boxes.items() if box.isChecked() and box.isEnabled()]

    def _reference_for(self, layer, scene: Scene, source: Scene | None):
        """What fill(reference=…) gets for the chosen reference layer: its Scene, which fill aligns to the scene
        (napari_convnp.reference)."""
        ref_layer = self.reference_combo.value
        if ref_layer is None:
            return None, ""
        if ref_layer is layer:
            raise InputError("the reference is the scene itself: choose another date")
        ref_scene, ref_source = layer_scene(ref_layer)
        reference = ref_source or ref_scene
        try:  # its grid, once before the run (cheap, on the GUI thread), not once per method in the fills
            grid_offset(scene, reference)
        except ValueError as err:
            raise InputError(f"the reference '{ref_layer.name}' does not fit this scene: {err}") from None
        return reference, ref_layer.name

    def _inputs(self) -> Job:
        """Everything a run needs, checked (no pass over the pixels: the worker checks the mask's, `Job.prepare`);
        InputError names what is missing."""
        layer, scene, source = self._scene()
        mask_layer = self.mask_combo.value
        if mask_layer is None:
            raise InputError("no mask layer: detect, simulate or paint one first")
        if np.shape(mask_layer.data)[-2:] != scene.shape[1:]:
            raise InputError(f"the mask '{mask_layer.name}' {np.shape(mask_layer.data)} does not fit the scene "
                             f"{scene.shape}")
        invert = self.invert_mask.isChecked()
        methods = self.selected_methods()
        if not methods:
            raise InputError("choose at least one method")
        reference, reference_name = self._reference_for(layer, scene, source)
        adapt = self.adapt_steps.value() if self.adapt.isChecked() else 0
        blend = None if self.blend.value() < 0 else self.blend.value() / 100
        return Job(layer.name, scene, mask_layer.data, methods, self.density.value() / 100,
                   self.device.currentText(), layer_placement(layer), reference, reference_name, adapt,
                   self.show_std.isChecked(), blend, f"{mask_layer.name}{' inverted' if invert else ''}",
                   self.replace_results.isChecked(), invert_mask=invert, mask_scene=mask_layer.metadata.get(SCENE_KEY))

    @_reports_input_errors
    def run(self):
        """Start the fill in a thread worker; the viewer stays responsive."""
        if self.worker is not None:
            raise InputError("busy: a fill, or reading or detecting a scene, is running; wait for it or cancel "
                             "the fill")
        job = self._inputs()
        self.job = job
        self._clear_status()
        self.progress.setRange(0, 0)  # busy until the first tile reports: never the last run's 100 %
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        with_ref = f" with reference '{job.reference_name}'" if job.reference is not None else ""
        self.status.setText(f"filling '{job.mask_name}' of {job.source} with {', '.join(job.methods)}{with_ref}…")
        self._activity = ActivityBar(f"filling {job.source}")
        _run.start_background_work()  # ended by `_end_run`
        _run.start(job, self._progress.changed.emit, yielded=self._on_result, errored=self._on_error,
                   finished=self._on_finished)
        return job

    def event(self, event):
        """Closing the dock (napari takes the widget out of the window) cancels a running fill: its results would
        otherwise keep arriving with no widget left to stop them."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None and self.worker is not None:
            self.cancel()
        return super().event(event)

    def cancel(self):
        if self.job is not None:
            self.job.cancel.set()
        if self.worker is not None:
            self.worker.quit()
        self.status.setText("cancelling after the current tile…")

    def _on_progress(self, done, total, what):
        """A phase of the run (`_run.work`): its name and count in the status line, the bar and the activity dock."""
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.status.setText(what)
        if self._activity is not None:
            self._activity.show(done, total, what)

    def _later(self, step: Callable[[], None]) -> None:
        """Run step on the GUI thread after those queued before it, one per turn of napari's event loop: a run's end
        makes several layers, 0.1-0.25 s each for napari (its layer controls, the layer's first draw), which together
        froze the GUI 0.4-0.9 s on a whole scene; the run's own end (`_end_run`) is queued after them, so it ends when
        its layers are there."""
        self._steps.append(step)
        if len(self._steps) == 1:
            QTimer.singleShot(0, self._next_step)

    def _next_step(self) -> None:
        try:
            self._steps[0]()
        finally:
            self._steps.popleft()
            if self._steps:
                QTimer.singleShot(STEP_GAP_MS, self._next_step)

    def _on_result(self, item):
        self._later(functools.partial(self._show_result, item))

    def _on_error(self, err):
        self._later(functools.partial(self._show_error, err))

    def _on_finished(self):
        self._later(self._end_run)

    def _show_result(self, item):
        if isinstance(item, Failure):
            label = item.job.label(item.method) if item.method in item.job.methods else item.method
            _notify_error(f"fill failed: {label}: {item.message}")
            self.status.setText(f"{label} failed: {item.message}")
            return
        job, method, result, scores, display = item
        label = job.label(method)
        layers = [("mean", levels(result.mean, display, "mean"), {"contrast_limits": display["mean"]})]
        if display.get("rgb") is not None:  # the scene's composite of the filled mean, to judge seams in colour
            layers.append(("RGB", levels(display["rgb"], display, "RGB"), {"rgb": True}))
        if result.variance is not None:
            layers.append(("variance", levels(result.variance, display, "variance"),
                           {"colormap": variance_colormap(), "contrast_limits": display["variance"]}))
            if display.get("std") is not None:
                layers.append(("std", levels(display["std"], display, "std"),
                               {"colormap": "viridis", "contrast_limits": display["std_limits"]}))
        made, added = {}, set()

        def make(kind, data, kwargs):
            earlier = {id(lay) for lay in self.viewer.layers}
            made[kind] = result_layer(self.viewer, job, data, label, kind, **kwargs)
            if id(made[kind]) not in earlier:  # added hidden: shown in the next step (a layer the user hid stays so)
                added.add(kind)

        def show(kind):
            if kind in added:
                made[kind].visible = True

        steps = [step for kind, data, kwargs in layers
                 for step in (functools.partial(make, kind, data, kwargs), functools.partial(show, kind))]
        steps.append(functools.partial(self._result_shown, job, label, result, scores, made))
        for i, step in enumerate(steps, 1):  # each in a turn of its own, right after this one (before the run's end)
            self._steps.insert(i, step)

    def _result_shown(self, job, label, result, scores, made):
        for kind in ("variance", "std"):
            share_limits(self.viewer, job.source, kind)
        self.save_combo.value = made["mean"]  # Save offers the newest result
        if scores is not None:
            job.scores[label] = scores
            self.table.add(job, label, scores)
            ref = f", reference '{job.reference_name}'" if job.reference is not None else ""
            self.scores_caption.setText(f"{job.source}: scores on each mask's hidden pixels "
                                        f"({job.pixels} in '{job.mask_name}'{ref})")
        if self.grid.enabled:
            label_cells(self.viewer, self.grid)
            self.viewer.reset_view()
        self.progress.setRange(0, 1)  # this method is done: full (its last phase, scoring, had no count)
        self.progress.setValue(1)
        self.status.setText(f"{label} done in {result.seconds:.1f} s on {result.device}{calibration_note(result)}")

    def _clear_scores(self, mask: str | None = None):
        """Scores belong to one scene and to its masks as they were: another scene clears them all, a mask made
        anew its own rows. The status and progress go too."""
        if self.worker is not None:
            return  # the running job owns them until it ends
        self.table.forget(mask)
        if not self.table.rowCount():
            self.scores_caption.setText("")
        self._clear_status()

    def _clear_status(self):
        """The last run's status and progress, once another choice is made (not while a task runs)."""
        if self.worker is not None:
            return
        self.status.setText("")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _show_error(self, err):
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        _notify_error(f"fill failed: {err}")

    def _end_run(self):
        _run.end_background_work()
        job = self.job
        if job is not None:
            job.worker = None
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:  # still busy: no method got as far as its first tile
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        if job is not None and job.cancel.is_set():
            self.progress.setValue(0)
            self.status.setText("cancelled: the results already shown stay; the cancelled method left none")

    # --- side by side ----------------------------------------------------------------------------------
    def _on_grid(self, event=None):
        """napari's grid, made for comparing: masks and composites out of the cells, the scene in one, every
        cell labelled with its layer's name, and all cells fitted."""
        try:
            self.grid_button.isChecked()
        except RuntimeError:  # the widget was closed; napari's grid goes on without it
            return
        on = bool(self.grid.enabled)
        if self.grid_button.isChecked() != on:
            self.grid_button.blockSignals(True)
            self.grid_button.setChecked(on)
            self.grid_button.blockSignals(False)
        if on:  # the scene itself gets a cell, beside its results
            self._grid_hidden, self._grid_shown = enter_grid(self.viewer, self.grid, self.image_combo.value)
        else:
            leave_grid(self.viewer, self._grid_hidden, self._grid_shown)
            self._grid_hidden, self._grid_shown = [], []
        self.viewer.reset_view()

    # --- 4. save ---------------------------------------------------------------------------------------
    def _save_box(self):
        box = QGroupBox("4. Save")
        row = QHBoxLayout(box)
        self.save_combo = self._picker(_is_savable, tooltip=TOOLTIPS["save layer"])
        row.addWidget(self.save_combo, 1)
        row.addWidget(button("Save GeoTIFF…", self._save_dialog, TOOLTIPS["save"]))
        return box

    @_reports_input_errors
    def _save_dialog(self):
        layer = self.save_combo.value
        if layer is None:
            raise InputError("no layer to save")
        path, _ = QFileDialog.getSaveFileName(self, "Save as GeoTIFF", default_filename(layer), "GeoTIFF (*.tif)")
        if path:
            self.save(layer, path)

    def save(self, layer, path) -> bool:
        """Write a layer as float32 GeoTIFF with its scene's georeferencing; never over the input."""
        if not _is_savable(layer):
            _notify_error(f"'{layer.name}' is not an image layer; save a mask with File › Save Selected Layers")
            return False
        try:
            write_image(str(path), full_data(layer), {"metadata": layer.metadata, "rgb": layer.rgb})
        except SceneError as err:
            _notify_error(str(err))
            return False
        _notify_info(f"saved {layer.name} to {path}")
        return True


