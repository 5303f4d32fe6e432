"""The dock widget: load, mask, inpaint (in a thread worker), compare, all over the library rooms."""
from __future__ import annotations

import threading

import numpy as np
from magicgui.widgets import create_widget
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                            QProgressBar, QPushButton, QSlider, QSpinBox, QTableWidget, QTableWidgetItem,
                            QVBoxLayout, QWidget)

from . import masks, metrics
from ._napari import (COMPOSITES, SCENE_KEY, composite_bands, contrast_limits, rgb_composite, scene_layers,
                      scene_of, write_image)
from .inpaint import METHODS, Cancelled, FillError, fill
from .scene import SceneError, read_scene

METHOD_LABELS = {"convnp": "ConvNP", "biharmonic": "Biharmonic", "harmonic": "Harmonic", "telea": "Telea",
                 "ns": "Navier–Stokes", "idw": "IDW (GDAL-style)", "gauss": "Gaussian conv."}


class _Progress(QObject):
    """Carries tile progress from the worker thread to the progress bar (queued across threads)."""

    changed = Signal(int, int, str)


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _device_choices() -> list[str]:
    import torch

    if torch.cuda.is_available():
        return ["auto", "cuda", "cpu"]
    return ["auto", "cpu"]


def _device_note() -> str:
    import torch

    if torch.cuda.is_available():
        return f"found GPU: {torch.cuda.get_device_name(0)}"
    return "no CUDA GPU found: running on the CPU"


def _mask_colours():
    """Pixels to fill in magenta, a colour no Landsat composite has: the gaps stand out."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "magenta"})


class GapFillWidget(QWidget):
    """Fill the gaps of a Landsat scene with the ConvNP or a classical method."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._cancel = threading.Event()
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)
        layout = QVBoxLayout(self)
        layout.addWidget(self._scene_box())
        layout.addWidget(self._mask_box())
        layout.addWidget(self._inpaint_box())
        layout.addWidget(self._save_box())
        layout.addStretch(1)

    # --- 1. scene ----------------------------------------------------------------------------------
    def _scene_box(self):
        box = QGroupBox("1. Scene")
        form = QFormLayout(box)
        row = QHBoxLayout()
        for text, slot in (("Open file…", self._open_file), ("Open product folder…", self._open_folder)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            row.addWidget(button)
        form.addRow(row)
        self.image_combo = create_widget(annotation="napari.layers.Image", label="bands")
        self.viewer.layers.events.inserted.connect(self.image_combo.reset_choices)
        self.viewer.layers.events.removed.connect(self.image_combo.reset_choices)
        form.addRow("Bands layer", self.image_combo.native)
        self.composite = QComboBox()
        self.composite.addItems(list(COMPOSITES))
        self.composite.currentTextChanged.connect(self._show_composite)
        form.addRow("RGB composite", self.composite)
        return box

    def load(self, path) -> None:
        """Open a GeoTIFF or product folder; a bad file becomes a notification."""
        try:
            scene = read_scene(path)
        except SceneError as err:
            _notify_error(str(err))
            return
        for data, kwargs, _ in scene_layers(scene):
            self.viewer.add_image(data, **kwargs)
        self.image_combo.reset_choices()
        self.image_combo.value = self.viewer.layers[scene.name]

    def _open_file(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open a Landsat GeoTIFF", "", "GeoTIFF (*.tif *.tiff *.TIF)")
        if path:
            self.load(path)

    def _open_folder(self):
        path = QFileDialog.getExistingDirectory(self, "Open a Landsat product folder")
        if path:
            self.load(path)

    def _scene(self):
        layer = self.image_combo.value
        if layer is None:
            raise SceneError("no image layer: open a scene first")
        if layer.rgb:
            raise SceneError(f"'{layer.name}' is an RGB composite; choose the bands layer")
        return layer, scene_of(layer.data, {"metadata": layer.metadata})

    def _show_composite(self, choice: str):
        try:
            layer, scene = self._scene()
        except SceneError:
            return
        source = layer.metadata.get(SCENE_KEY, scene)
        if composite_bands(source, choice) is None:
            _notify_error(f"{layer.name} has no bands for the composite {choice}")
            return
        name = f"{layer.name} RGB"
        data = rgb_composite(source, choice)
        existing = [lay for lay in self.viewer.layers if lay.name.startswith(name) and lay.rgb]
        if existing:
            existing[0].data, existing[0].name = data, f"{name} {choice}"
        else:
            self.viewer.add_image(data, name=f"{name} {choice}", rgb=True)

    # --- 2. mask -----------------------------------------------------------------------------------
    def _mask_box(self):
        box = QGroupBox("2. Mask (pixels to fill)")
        form = QFormLayout(box)
        row = QHBoxLayout()
        detect = QPushButton("Detect gaps")
        detect.clicked.connect(self.detect)
        simulate = QPushButton("Simulate SLC-off")
        simulate.clicked.connect(self.simulate)
        paint = QPushButton("New paint layer")
        paint.clicked.connect(self.new_paint_layer)
        for w in (detect, simulate, paint):
            row.addWidget(w)
        form.addRow(row)
        self.seed = QSpinBox()
        self.seed.setRange(0, 10**6)
        form.addRow("Simulation seed", self.seed)
        self.mask_combo = create_widget(annotation="napari.layers.Labels", label="mask")
        self.other_combo = create_widget(annotation="napari.layers.Labels", label="other")
        for combo in (self.mask_combo, self.other_combo):
            self.viewer.layers.events.inserted.connect(combo.reset_choices)
            self.viewer.layers.events.removed.connect(combo.reset_choices)
        form.addRow("Mask layer", self.mask_combo.native)
        row = QHBoxLayout()
        self.combine_op = QComboBox()
        self.combine_op.addItems(["union with", "subtract"])
        row.addWidget(self.combine_op)
        row.addWidget(self.other_combo.native)
        combine = QPushButton("Combine")
        combine.clicked.connect(self.combine)
        row.addWidget(combine)
        form.addRow(row)
        return box

    def _add_mask(self, mask: np.ndarray, name: str, **metadata):
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = mask.astype(np.uint8)
            layer.metadata.update(metadata)
        else:
            layer = self.viewer.add_labels(mask.astype(np.uint8), name=name, opacity=0.5, metadata=metadata,
                                           colormap=_mask_colours())
        self.mask_combo.reset_choices()
        self.mask_combo.value = layer
        return layer

    def detect(self):
        try:
            layer, scene = self._scene()
        except SceneError as err:
            return _notify_error(str(err))
        source = layer.metadata.get(SCENE_KEY)
        zero_ambiguous = source is not None and masks.scene_zero_is_ambiguous(source.nodata_value, source.source_dtype)
        gaps = masks.detect_gaps(scene.bands, scene.nodata, pixel_size=source.pixel_size if source else None,
                                 zero_is_ambiguous=zero_ambiguous)
        if not gaps.any():
            return _notify_error(f"no gaps detected in {layer.name}; simulate or paint a mask instead")
        return self._add_mask(gaps, f"{layer.name} gaps")

    def simulate(self):
        try:
            layer, scene = self._scene()
        except SceneError as err:
            return _notify_error(str(err))
        source = layer.metadata.get(SCENE_KEY)
        stripes = masks.simulate_slc_off(scene.shape[1:], seed=self.seed.value(),
                                         pixel_size=source.pixel_size if source else None)
        hidden = np.broadcast_to(stripes, scene.shape) & ~scene.nodata  # only known pixels can be scored
        return self._add_mask(hidden, f"{layer.name} simulated SLC-off", simulated=True)

    def new_paint_layer(self):
        try:
            layer, scene = self._scene()
        except SceneError as err:
            return _notify_error(str(err))
        paint = self._add_mask(np.zeros(scene.shape[1:], np.uint8), f"{layer.name} painted")
        paint.mode = "paint"
        paint.brush_size = 10
        paint.selected_label = 1
        self.viewer.layers.selection.active = paint
        return paint

    def combine(self):
        first, second = self.mask_combo.value, self.other_combo.value
        if first is None or second is None:
            return _notify_error("choose two mask layers to combine")
        a, b = np.asarray(first.data) != 0, np.asarray(second.data) != 0
        if a.shape[-2:] != b.shape[-2:]:
            return _notify_error(f"masks '{first.name}' {a.shape} and '{second.name}' {b.shape} differ in size")
        if self.combine_op.currentText() == "subtract":
            return self._add_mask(masks.subtract(a, b), f"{first.name} − {second.name}")
        return self._add_mask(masks.union(a, b), f"{first.name} ∪ {second.name}")

    # --- 3. inpaint --------------------------------------------------------------------------------
    def _inpaint_box(self):
        box = QGroupBox("3. Inpaint")
        form = QFormLayout(box)
        self.method_boxes = {}
        grid = QHBoxLayout()
        column = None
        for i, method in enumerate(METHODS):
            if i % 3 == 0:
                column = QVBoxLayout()
                grid.addLayout(column)
            check = QCheckBox(METHOD_LABELS[method])
            check.setChecked(method == "convnp")
            self.method_boxes[method] = check
            column.addWidget(check)
        form.addRow("Methods", grid)
        self.density = QSlider()
        self.density.setOrientation(Qt.Orientation.Horizontal)
        self.density.setRange(1, 100)
        self.density.setValue(100)
        self.density_label = QLabel("100 %")
        self.density.valueChanged.connect(lambda v: self.density_label.setText(f"{v} %"))
        row = QHBoxLayout()
        row.addWidget(self.density)
        row.addWidget(self.density_label)
        form.addRow("Context density", row)
        self.device = QComboBox()
        self.device.addItems(_device_choices())
        form.addRow("Device", self.device)
        form.addRow("", QLabel(_device_note()))
        self.show_std = QCheckBox("also show the standard deviation")
        form.addRow(self.show_std)
        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.grid_button = QPushButton("Side by side")
        self.grid_button.setCheckable(True)
        self.grid_button.toggled.connect(lambda on: setattr(self.viewer.grid, "enabled", on))
        for w in (self.run_button, self.cancel_button, self.grid_button):
            row.addWidget(w)
        form.addRow(row)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addRow(self.progress)
        form.addRow(self.status)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["method", "PSNR dB", "SSIM", "RMSE"])
        self.table.setMinimumHeight(150)
        form.addRow(self.table)
        return box

    def selected_methods(self) -> list[str]:
        return [m for m, box in self.method_boxes.items() if box.isChecked()]

    def run(self):
        """Start the fill in a thread worker; the viewer stays responsive."""
        if self.worker is not None:
            return _notify_error("a fill is already running; cancel it first")
        try:
            layer, scene = self._scene()
            if self.mask_combo.value is None:
                raise SceneError("no mask layer: detect, simulate or paint one first")
            mask = np.asarray(self.mask_combo.value.data) != 0
            if mask.shape[-2:] != scene.shape[1:]:
                raise SceneError(f"the mask {mask.shape} does not fit the scene {scene.shape}")
            mask = masks.validate_mask(mask, scene.shape, fillable=~scene.nodata)
            methods = self.selected_methods()
            if not methods:
                raise SceneError("choose at least one method")
        except (SceneError, masks.MaskError) as err:
            return _notify_error(str(err))
        from napari.qt.threading import create_worker

        density = self.density.value() / 100
        self._cancel.clear()
        self._job = {"source": layer.name, "scene": scene, "mask": mask, "density": density, "scores": {}}
        self.table.setRowCount(0)
        self.worker = create_worker(self._work, scene, mask, methods, density, self.device.currentText(),
                                    _ignore_errors=True)  # _on_error reports them
        self.worker.yielded.connect(self._on_result)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"filling {int(mask.sum())} pixels with {', '.join(methods)}…")
        self.worker.start()

    def _work(self, scene, mask, methods, density, device):
        """Runs in the worker thread: one method after another, each result yielded as it ends."""
        nodata = scene.nodata & ~mask
        for method in methods:
            if self._cancel.is_set():
                return
            report = lambda done, total, m=method: self._progress.changed.emit(done, total, m)  # noqa: E731
            try:
                result = fill(scene.bands, mask, method=method, density=density, nodata=nodata, device=device,
                              progress=report, cancelled=self._cancel.is_set)
            except Cancelled:
                return
            except RuntimeError as err:  # superqt drops a RuntimeError without `finished`: the GUI would hang
                raise FillError(f"{METHOD_LABELS[method]}: {err}") from err
            yield result

    def cancel(self):
        self._cancel.set()
        if self.worker is not None:
            self.worker.quit()
        self.status.setText("cancelling after the current tile…")

    def _on_progress(self, done, total, method):
        self.progress.setMaximum(total)
        self.progress.setValue(done)
        self.status.setText(f"{METHOD_LABELS[method]}: tile {done} of {total}")

    def _layer(self, data, name, **kwargs):
        """Replace the data of a layer with this name, or add it: re-runs are predictable."""
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            for key, value in kwargs.items():
                setattr(layer, key, value)
            return layer
        return self.viewer.add_image(data, name=name, **kwargs)

    def _on_result(self, result):
        job = self._job
        scene, mask = job["scene"], job["mask"]
        label = result.method if result.density == 1 else f"{result.method} {round(result.density * 100)}%"
        base = f"{job['source']} {label}"
        meta = {SCENE_KEY: scene}
        limits = contrast_limits(result.mean)
        self._layer(result.mean, f"{base} mean", contrast_limits=limits, metadata=meta)
        if result.variance is not None:
            in_gaps = result.variance[mask]
            top = float(np.nanpercentile(in_gaps, 90)) if in_gaps.size else 1.0  # the tail would wash it out
            self._layer(result.variance, f"{base} variance", colormap="magma",
                        contrast_limits=(0.0, top or 1.0), metadata=meta)
            if self.show_std.isChecked():
                self._layer(np.sqrt(result.variance), f"{base} std", colormap="viridis",
                            contrast_limits=(0.0, float(np.sqrt(top)) or 1.0), metadata=meta)
        truth_known = np.isfinite(scene.bands[mask]).all()
        if truth_known:
            data_range = float(np.nanmax(scene.bands) - np.nanmin(scene.bands)) or 1.0
            job["scores"][label] = metrics.scores(result.mean, scene.bands, mask, data_range)
            self._show_scores(job["scores"])
        self.status.setText(f"{METHOD_LABELS[result.method]} done in {result.seconds:.1f} s on {result.device}")

    def _show_scores(self, scores):
        self.table.setRowCount(len(scores))
        for row, (label, s) in enumerate(scores.items()):
            for col, text in enumerate([label, f"{s['psnr']:.2f}", f"{s['ssim']:.3f}", f"{s['rmse']:.4g}"]):
                self.table.setItem(row, col, QTableWidgetItem(text))

    # --- 4. save -----------------------------------------------------------------------------------
    def _save_box(self):
        box = QGroupBox("4. Save")
        row = QHBoxLayout(box)
        self.save_combo = create_widget(annotation="napari.layers.Image", label="result")
        self.viewer.layers.events.inserted.connect(self.save_combo.reset_choices)
        self.viewer.layers.events.removed.connect(self.save_combo.reset_choices)
        row.addWidget(self.save_combo.native, 1)
        button = QPushButton("Save GeoTIFF…")
        button.clicked.connect(self._save_dialog)
        row.addWidget(button)
        return box

    def _save_dialog(self):
        layer = self.save_combo.value
        if layer is None:
            return _notify_error("no layer to save")
        path, _ = QFileDialog.getSaveFileName(self, "Save as GeoTIFF", f"{layer.name}.tif", "GeoTIFF (*.tif)")
        if path:
            self.save(layer, path)

    def save(self, layer, path) -> bool:
        """Write a layer as float32 GeoTIFF with its scene's georeferencing; never over the input."""
        try:
            write_image(str(path), layer.data, {"metadata": layer.metadata, "rgb": layer.rgb})
        except SceneError as err:
            _notify_error(str(err))
            return False
        from napari.utils.notifications import show_info

        show_info(f"saved {layer.name} to {path}")
        return True

    def _on_error(self, err):
        _notify_error(f"fill failed: {err}")

    def _on_finished(self):
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self._cancel.is_set():
            self.status.setText("cancelled")

