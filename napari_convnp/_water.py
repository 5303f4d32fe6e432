"""The dock widget's Water step: after a ConvNP fill, P(water) per pixel and a water map that the threshold slider
updates live, beside the hard water map of a classical fill, and the water area with its 95 % interval.

*Map water* prepares in a thread worker (reading the index's two bands of the fill and its variance, estimating
the band-error correlation, preparing the closed form: seconds on a whole scene); the GUI thread only draws the
layers when it returns. A new threshold costs no refill: P comes in closed form from the fill's Gaussians
(`water.water_probability_at`), about 0.1 s on a 2000² scene, on the GUI thread. The area's interval takes seconds
(`water.area_interval` draws the filled pixels jointly), so it runs in a thread worker once the slider rests.
Both workers show progress and stop on *Cancel*. Only the index's two bands are kept, so a whole scene's lazily
read result is not loaded whole.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSlider,
)

from ._layers import RESULT_KEY, InputError, full_data, result_method, result_name
from ._napari import SCENE_KEY, fit_placement, layer_placement
from ._pickers import button
from ._run import _Progress, end_background_work, start_background_work
from ._tooltips import TOOLTIPS
from .errors import Cancelled, OptionError
from .indices import INDICES, WATER_INDICES, IndexBands, index_bands, reflectance_scale
from .options import VARIANCE_METHODS
from .water import (
    Area,
    _product,
    area_interval,
    index_water_map,
    looks_like_digital_numbers,
    pixel_area_km2,
    water_probability_at,
)

SLIDER_STEPS = 100  # the threshold is the slider's value / SLIDER_STEPS, over an index's range [−1, 1]
AREA_DELAY_MS = 400  # the area is recomputed once the slider has rested this long
TWO_BANDS = "two bands"
PAIR = IndexBands("pair", 0, 1)  # the index's two bands, kept apart from the scene's others
WATER_COLOUR, CLASSICAL_COLOUR = "#1e90ff", "#ff8c00"  # the ConvNP's map blue, a classical fill's orange


def _result_info(layer) -> dict:
    return layer.metadata.get(RESULT_KEY) or {}


def _method(layer) -> str:
    """The method of a result layer: its label is the method with '+ref', '+adapt' or ' 50%' after it."""
    return result_method(_result_info(layer).get("label", ""))


def sibling(viewer, layer, kind: str):
    """The result layer of this `kind` from the same run as `layer` (its variance beside its mean), or None."""
    info = {**_result_info(layer), "kind": kind}
    return next((lay for lay in viewer.layers if lay is not layer and _result_info(lay) == info), None)


def _is_mean(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and _result_info(layer).get("kind") == "mean"


def _is_classical(layer) -> bool:
    """The mean of a fill without a variance (biharmonic, idw…): a hard water map, no probability."""
    return _is_mean(layer) and _method(layer) not in VARIANCE_METHODS


def probability_colormap():
    """P from 0 to 1 in viridis (perceptual: equal steps of P look equal); pixels without a value transparent."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    viridis = ensure_colormap("viridis")
    return Colormap(colors=viridis.colors, controls=viridis.controls, name="P (viridis)", nan_color="transparent")


def _map_colours(colour: str):
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: colour})


def water_labels(probability: np.ndarray) -> np.ndarray:
    """The water map of P: 1 where water is more likely than not; 0 elsewhere and where there is no value."""
    return (probability > 0.5).view(np.uint8)


def product_layer(viewer, result, kind: str, data: np.ndarray, *, labels: bool = False, **kwargs):
    """The layer of a product of `result` (its P or its water map), over it and named after it ('convnp water');
    made again from the same result, its data is replaced."""
    info = {**_result_info(result), "kind": kind}
    existing = next((lay for lay in viewer.layers if _result_info(lay) == info), None)
    if existing is not None and existing.data.shape == data.shape and existing.data.dtype == data.dtype:
        np.copyto(existing.data, data)  # in place and refreshed: napari skips re-checking the layer's dims
        existing.refresh()
        return existing
    metadata = {SCENE_KEY: result.metadata.get(SCENE_KEY), RESULT_KEY: info}
    add = viewer.add_labels if labels else viewer.add_image
    return add(data, name=result_name(viewer, info), metadata=metadata,
               **fit_placement(layer_placement(result), data.ndim), **kwargs)


def _index_pair(data, bands: IndexBands) -> np.ndarray:
    """The index's two bands of a result layer's data (C×H×W, in memory or read lazily) as 2×H×W float32."""
    return np.stack([np.asarray(data[i], np.float32) for i in (bands.a, bands.b)])


@dataclass
class WaterStep:
    """What the slider redraws from, kept from one press of *Map water*: the index's two bands of the fill (and
    of the classical fill), and the layers it updates."""

    fill: object  # the ConvNP mean layer
    bands: IndexBands  # in the scene's bands
    p_at: object  # P at a threshold (`water.water_probability_at`: prepared once, not on every move)
    filled: np.ndarray  # H×W
    band_correlation: float
    scale: tuple[float, float]  # (gain, offset) to reflectance
    pixel_area: float | None  # km², None: the scene has no pixel size
    what: str  # 'water', or 'vegetation' for NDVI
    classical: object = None  # a classical mean layer
    classical_at: object = None  # its hard map at a threshold
    threshold: float | None = None  # of the maps below
    probability: np.ndarray | None = None  # P at `threshold`
    classical_hard: np.ndarray | None = None  # the classical fill's P (0 or 1) at `threshold`
    classical_area: float = 0.0  # of the classical map at that threshold

    def at(self, threshold: float) -> None:
        """P and the classical hard map at `threshold`, unless they are there (the worker makes the first)."""
        if threshold != self.threshold:
            self.probability = self.p_at(threshold)
            self.classical_hard = self.classical_at(threshold) if self.classical_at is not None else None
            self.threshold = threshold


def _prepare_step(fill, variance_layer, classical, bands: IndexBands, scale, pixel_area, threshold: float,
                  cancel: threading.Event) -> WaterStep | None:
    """In the worker thread: the index's two bands read, ρ estimated once and the closed forms prepared (the
    seconds of *Map water*) and the maps at `threshold`; None once cancelled, checked between these stages."""
    mean, variance = _index_pair(full_data(fill), bands), _index_pair(full_data(variance_layer), bands)
    if cancel.is_set():
        return None
    water = index_water_map(mean, variance, variance > 0, PAIR, threshold, scale)  # ρ, once
    if cancel.is_set():
        return None
    p_at = water_probability_at(mean, variance, PAIR, band_correlation=water.band_correlation, scale=scale)
    classical_at = (water_probability_at(_index_pair(full_data(classical), bands), None, PAIR, scale=scale)
                    if classical is not None else None)
    if cancel.is_set():
        return None
    step = WaterStep(fill, bands, p_at, water.filled, water.band_correlation, scale, pixel_area,
                     "vegetation" if bands.name == "ndvi" else "water", classical, classical_at)
    step.at(threshold)  # the maps at the slider's threshold, so that the GUI thread only draws them
    return None if cancel.is_set() else step


def _area_of(probability, filled, pixel_area, progress, cancel: threading.Event) -> Area | None:
    """In the worker thread: the area with its interval; None once cancelled."""
    try:
        return area_interval(probability, filled, pixel_area=pixel_area or 1.0,
                             progress=lambda done, total: progress(done, total, "area"), cancelled=cancel.is_set)
    except Cancelled:
        return None


def _amount(value: float, pixel_area: float | None) -> str:
    return f"{value:,.2f} km²" if pixel_area else f"{value:,.0f} pixels"


class WaterPanel(QGroupBox):
    """5. Water: P(water) and the water maps of a fill, a live threshold, the area with its interval."""

    def __init__(self, owner, reports_input_errors):
        """owner: the dock widget (its viewer and layer pickers); reports_input_errors: its decorator that turns
        bad input into one notification (`_widget` imports this module, so it is handed over, not imported)."""
        super().__init__("5. Water (after a ConvNP fill)")
        self.owner, self.viewer = owner, owner.viewer
        self._reports = reports_input_errors
        self._colours = {"P": probability_colormap(), "fill": _map_colours(WATER_COLOUR),
                         "classical": _map_colours(CLASSICAL_COLOUR)}
        self.step: WaterStep | None = None
        self.prepare_worker = None  # *Map water*'s, while it prepares the step
        self._prepare_cancel = threading.Event()
        self._prepare_again = False  # Map water pressed (or the index changed) while preparing: prepare anew after
        self.area_worker = None
        self._area_cancel = threading.Event()
        self._area_again = False  # the slider moved while the area was computed: compute it anew after
        self.area: Area | None = None
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)
        form = QFormLayout(self)
        self.fill_combo = owner._picker(
            lambda layer: _is_mean(layer) and sibling(self.viewer, layer, "variance") is not None,
            tooltip=TOOLTIPS["water fill"], on_change=self._on_fill_changed)
        form.addRow("ConvNP fill", self.fill_combo)
        self.compare_combo = owner._picker(
            _is_classical, none="none",
            tooltip=TOOLTIPS["water compare"], on_change=self._on_compare_changed)
        form.addRow("Compare with", self.compare_combo)
        self.index_combo = QComboBox()
        self.index_combo.setToolTip(TOOLTIPS["water index"])
        self.band_a, self.band_b = QComboBox(), QComboBox()
        row = QHBoxLayout()
        row.addWidget(self.index_combo, 1)
        for combo in (self.band_a, self.band_b):
            combo.setToolTip(TOOLTIPS["water index"])
            row.addWidget(combo)
        form.addRow("Index", row)
        self.index_note = QLabel("")
        self.index_note.setWordWrap(True)
        form.addRow(self.index_note)
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(-SLIDER_STEPS, SLIDER_STEPS)
        self.threshold.setToolTip(TOOLTIPS["water threshold"])
        self.threshold_label = QLabel()
        self.threshold.valueChanged.connect(self._on_threshold)
        row = QHBoxLayout()
        row.addWidget(self.threshold, 1)
        row.addWidget(self.threshold_label)
        form.addRow("Threshold", row)
        self.reflectance_note = QLabel("")
        self.reflectance_note.setWordWrap(True)
        form.addRow(self.reflectance_note)
        row = QHBoxLayout()
        self.map_button = button("Map water", self.map_water, TOOLTIPS["map water"])
        self.cancel_button = button("Cancel", self.cancel, TOOLTIPS["cancel water"])
        self.cancel_button.setEnabled(False)
        row.addWidget(self.map_button)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        self.progress = QProgressBar()
        form.addRow(self.progress)
        self.area_label = QLabel("")
        self.area_label.setWordWrap(True)
        self.area_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.area_label)
        self._area_timer = QTimer(self)
        self._area_timer.setSingleShot(True)
        self._area_timer.setInterval(AREA_DELAY_MS)
        self._area_timer.timeout.connect(self.start_area)
        self.index_combo.currentIndexChanged.connect(self._on_index_changed)
        for combo in (self.band_a, self.band_b):
            combo.currentIndexChanged.connect(self._redo)
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self._on_threshold(self.threshold.value())
        self._on_fill_changed(self.fill_combo.value)

    # --- choices -------------------------------------------------------------------------------------
    def _scene(self):
        layer = self.fill_combo.value
        return None if layer is None else layer.metadata.get(SCENE_KEY)

    def _on_fill_changed(self, layer):
        """Offer the indices the fill's scene has bands for, say why the others are missing, and note digital
        numbers; the maps already made stay, the slider leaves them; a step being prepared is cancelled."""
        self.step = None
        self._prepare_again = False
        self._prepare_cancel.set()
        scene = self._scene()
        names = scene.band_names if scene is not None else []
        offered, missing = [], []
        for key in INDICES if scene is not None else ():
            try:
                index_bands(key, names, _product(scene))
            except OptionError as err:
                missing.append(str(err))
                continue
            offered.append((f"{key.upper()} ({', '.join(INDICES[key])})", key))
        if len(names) >= 2:
            offered.append(("two bands (a − b)/(a + b)", TWO_BANDS))
        water = next((key for key in WATER_INDICES if any(key == k for _, k in offered)), TWO_BANDS)
        for combo in (self.index_combo, self.band_a, self.band_b):
            combo.blockSignals(True)
            combo.clear()
        for text, key in offered:
            self.index_combo.addItem(text, key)
        self.index_combo.setCurrentIndex(max(0, self.index_combo.findData(water)))
        for combo, start in ((self.band_a, 0), (self.band_b, 1)):
            combo.addItems(names)
            combo.setCurrentIndex(min(start, len(names) - 1))
        for combo in (self.index_combo, self.band_a, self.band_b):
            combo.blockSignals(False)
        self.index_note.setText("not offered: " + "; ".join(missing) if missing else "")
        self.reflectance_note.setText(
            "the values look like digital numbers, not reflectance: the default threshold 0 assumes "
            "reflectance; choose the threshold for this scene" if scene is not None and
            looks_like_digital_numbers(scene) else "")
        self._show_bands()
        self._choose_compare()

    def _on_index_changed(self, _=None):
        self._show_bands()
        self._redo()

    def _show_bands(self):
        two = self.index_combo.currentData() == TWO_BANDS
        self.band_a.setVisible(two)
        self.band_b.setVisible(two)

    def _choose_compare(self, *_):
        """With no classical fill chosen, the newest of the fill's scene and mask, if there is one."""
        fill = self.fill_combo.value
        if fill is None or self.compare_combo.value is not None:
            return
        same = {key: _result_info(fill).get(key) for key in ("source", "mask")}
        match = next((lay for lay in reversed(list(self.viewer.layers)) if _is_classical(lay)
                      and all(_result_info(lay).get(key) == value for key, value in same.items())), None)
        if match is not None:
            self.compare_combo.value = match

    def _on_inserted(self, event):
        if _is_classical(event.value):
            self._choose_compare()

    def index(self) -> IndexBands:
        """The chosen index's bands in the fill's scene; OptionError (a notification) names what is missing."""
        scene = self._scene()
        key = self.index_combo.currentData()
        if scene is None or key is None:
            raise InputError("no index: the scene of the chosen fill has fewer than two bands")
        if key == TWO_BANDS:
            key = f"{self.band_a.currentText()},{self.band_b.currentText()}"
        return index_bands(key, scene.band_names, _product(scene))

    def threshold_value(self) -> float:
        return self.threshold.value() / SLIDER_STEPS

    # --- the step --------------------------------------------------------------------------------------
    def _redo(self, *_):
        """Another index or classical fill: the maps made again, if they were made."""
        if self.step is not None or self.prepare_worker is not None:
            self.map_water()

    def _on_compare_changed(self, layer):
        """Another classical fill: the maps made again. None (its layer removed, as when the viewer closes): only
        its map dropped from the step, with no worker, which would outlive a closing viewer."""
        if layer is None and self.step is not None and self.prepare_worker is None:
            self.step.classical = self.step.classical_at = self.step.classical_hard = None
            self._show_area()
        else:
            self._redo()

    def map_water(self):
        """P(water) and the water maps of the chosen fill at the slider's threshold, prepared in a thread worker (ρ
        estimated once, there) and drawn when it returns (`self.step` is then set), then the area in a worker.
        Pressed again while preparing, the preparation is cancelled and made anew with the choices then current.
        Returns the worker; bad input is a notification (checked here, at once) and returns None."""
        return self._reports(WaterPanel._map_water)(self)

    def _map_water(self):
        fill = self.fill_combo.value
        if fill is None:
            raise InputError("no ConvNP fill: run the ConvNP first (its mean and variance layers)")
        variance_layer = sibling(self.viewer, fill, "variance")
        if variance_layer is None:
            raise InputError(f"'{fill.name}' has no variance layer beside it: run the ConvNP again")
        scene, bands = self._scene(), self.index()
        if self.prepare_worker is not None:
            self._prepare_again = True
            self._prepare_cancel.set()
            return self.prepare_worker
        from napari.qt.threading import create_worker

        self.cancel_area()
        self.step = None  # the slider leaves the maps drawn until the new step is there
        self._prepare_again = False
        self._prepare_cancel = cancel = threading.Event()
        self.prepare_worker = create_worker(
            _prepare_step, fill, variance_layer, self.compare_combo.value, bands, reflectance_scale(scene),
            pixel_area_km2(scene), self.threshold_value(), cancel, _ignore_errors=True)
        self.prepare_worker.returned.connect(functools.partial(self._on_prepared, cancel))
        self.prepare_worker.errored.connect(functools.partial(self._on_error, "water maps"))
        self.prepare_worker.finished.connect(self._on_prepare_finished)
        self.area_label.setText(f"{fill.name}: P({bands.name.upper()} > t) preparing…")
        self.progress.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        start_background_work()  # ended by `_on_prepare_finished`
        self.prepare_worker.start()
        return self.prepare_worker

    def _on_prepared(self, cancel: threading.Event, step: WaterStep | None):
        if step is None or cancel.is_set():  # cancelled, or the fill changed meanwhile
            return
        self.step = step
        try:
            self.redraw()
        except RuntimeError:  # the dock was closed while the worker ran
            self.step = None

    def _on_prepare_finished(self):
        end_background_work()
        self.prepare_worker = None
        try:
            if self._prepare_again:
                self.map_water()
                return
            if self.area_worker is None:  # else its progress stays
                self._idle(done=self.step is not None)
            if self.step is None and self.area_label.text().endswith("preparing…"):
                self.area_label.setText(self.area_label.text().replace("preparing…", "cancelled: press Map water"))
        except RuntimeError:  # the dock was closed while the worker ran
            pass

    def cancel(self):
        """*Cancel*: the step being prepared and the area being computed."""
        self._prepare_again = False
        self._prepare_cancel.set()
        self.cancel_area()

    def _idle(self, done: bool):
        """No worker left: Cancel off, the progress bar full after a result, empty after a cancel."""
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(int(done))

    def redraw(self):
        """P and the water maps at the slider's threshold: closed form, no refill; the area follows once the
        slider rests."""
        step = self.step
        step.at(self.threshold_value())
        product_layer(self.viewer, step.fill, f"P({step.what})", step.probability,
                      colormap=self._colours["P"], contrast_limits=(0.0, 1.0))
        product_layer(self.viewer, step.fill, step.what, water_labels(step.probability), labels=True, opacity=0.7,
                      colormap=self._colours["fill"])
        if step.classical is not None:
            hard = step.classical_hard
            product_layer(self.viewer, step.classical, step.what, water_labels(hard), labels=True, opacity=0.7,
                          colormap=self._colours["classical"])
            step.classical_area = float(np.count_nonzero(hard > 0.5)) * (step.pixel_area or 1.0)
        self.area = None
        self._show_area()
        self._area_timer.start()

    def _on_threshold(self, value: int):
        self.threshold_label.setText(f"{value / SLIDER_STEPS:+.2f}")
        if self.step is not None:
            self.redraw()

    # --- the area --------------------------------------------------------------------------------------
    def start_area(self):
        """The area with its interval at the current threshold, in a thread worker; a computation of an
        earlier threshold is cancelled first."""
        if self.step is None:
            return None
        if self.area_worker is not None:
            self._area_again = True
            self._area_cancel.set()
            return None
        from napari.qt.threading import create_worker

        self._area_again = False
        self._area_cancel = threading.Event()
        step = self.step
        self.area_worker = create_worker(_area_of, step.probability, step.filled, step.pixel_area,
                                         self._progress.changed.emit, self._area_cancel, _ignore_errors=True)
        self.area_worker.returned.connect(functools.partial(self._on_area, step, step.probability))
        self.area_worker.errored.connect(functools.partial(self._on_error, "water area"))
        self.area_worker.finished.connect(self._on_area_finished)
        self.progress.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        start_background_work()  # ended by `_on_area_finished`
        self.area_worker.start()
        return self.area_worker

    def cancel_area(self):
        self._area_again = False
        self._area_timer.stop()
        self._area_cancel.set()

    def _on_progress(self, done: int, total: int, _):
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _on_area(self, step, probability, area):
        if area is not None and step is self.step and probability is step.probability:  # not a stale threshold
            self.area = area
            try:
                self._show_area()
            except RuntimeError:  # the dock was closed while the worker ran
                pass

    def _on_error(self, what: str, err):
        from napari.utils.notifications import show_error

        show_error(f"{what} failed: {err}")

    def _on_area_finished(self):
        end_background_work()
        self.area_worker = None
        try:
            if self.prepare_worker is None:  # else its busy bar stays
                self._idle(done=self.area is not None)
            if self._area_again:
                self.start_area()
            elif self.area is None and self.step is not None:
                self.area_label.setText(self.area_label.text().replace("computing…", "cancelled"))
        except RuntimeError:  # the dock was closed while the worker ran
            pass

    def _show_area(self):
        step = self.step
        if step is None:
            return
        unit = step.pixel_area
        head = f"{step.fill.name}: P({step.bands.name.upper()} > {self.threshold_value():+.2f})"
        if self.area is None:
            text = f"{head}; area with its 95 % interval computing…"
        else:
            area = self.area
            text = (f"{head}; {step.what} {_amount(area.expected, unit)}, 95 %: {_amount(area.low, unit)} – "
                    f"{_amount(area.high, unit)} ({_amount(area.known, unit)} on known pixels; "
                    f"{step.filled.mean():.0%} of the pixels filled)")
        if step.classical is not None:
            text += (f"\n{step.classical.name}: {step.what} {_amount(step.classical_area, unit)} "
                     "(a hard map: no interval)")
        self.area_label.setText(text)
