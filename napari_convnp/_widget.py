"""The dock widget: load, mask, inpaint (in a thread worker), compare, save — thin glue over the library rooms."""
from __future__ import annotations

import atexit
import dataclasses
import functools
import inspect
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt, Signal
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
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from . import baselines, masks, metrics, options
from ._napari import (
    COMPOSITE_KEY,
    READER_PATTERNS,
    SCENE_KEY,
    composite_name,
    composites,
    contrast_limits,
    display_step,
    fit_placement,
    georeference,
    layer_placement,
    lazy_image,
    prefer_this_reader,
    preferred_reader_patterns,
    rgb_composite,
    scene_of,
    write_image,
)
from .adapt import DEFAULT_STEPS
from .errors import ConvNPError
from .fileio import fill_to_files
from .inpaint import Cancelled, FillError, fill
from .reference import grid_offset
from .scene import Scene, SceneError, read_scene, scene_shape

# screen pixels a character of a grid-cell label takes per unit of font size (points: 4/3 px at 96 dpi, and some
# margin for wide letters), and the pixels the label stands off the cell's left edge; measured on screenshots
LABEL_CHARACTER_WIDTH, LABEL_MARGIN = 1.3, 10
RESULT_KEY = "napari_convnp_result"  # layer.metadata: {"source", "label", "kind"} of a result or a mask
FROM_FILE_KEY = "napari_convnp_read_from_file"  # the Scene of a layer opened by another reader, read by us
NAME_BUDGET = 24  # characters the layer list shows at its default width (it elides the middle)
NEEDS_REFERENCE = options.NEEDS_REFERENCE
# Results of scenes with more values than this (4096²×4) are streamed to files and shown read back window by
# window, not held in memory: a whole Landsat scene's mean and variance would take 2.7 GB.
STREAM_RESULTS_VALUES = 2 ** 26


class InputError(ConvNPError):
    """Something the user can put right in the widget (no scene, a mask of another size, no method…).

    Raised by the input checks, turned into a notification by `_reports_input_errors`; never a traceback."""


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


# --- methods, from the registry in options.py (a new baseline needs no second list here) -----------------

def uses_reference(method: str) -> bool:
    """Whether a method takes another date: the ConvNP optionally, the two-date baselines always."""
    return method in options.USES_REFERENCE


def method_description(method: str) -> str:
    """One or two sentences for the method's tooltip, from its docstring in the registry."""
    if method == "convnp":
        return ("The Convolutional Neural Process: a network trained on real Landsat scenes; gives the mean and "
                "its variance (how far the fill can be trusted).")
    registry = {**baselines.METHODS, **baselines.TWO_DATE_METHODS}
    doc = inspect.getdoc(registry.get(method)) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    return text or method


def result_label(method: str, density: float = 1.0, reference: bool = False, adapted: bool = False) -> str:
    """The short label of a result, in layer names and the score table: 'convnp', 'convnp+ref 50%'…"""
    label = method
    if reference and method not in NEEDS_REFERENCE:  # a two-date baseline always has one: no need to say
        label += "+ref"
    if adapted:
        label += "+adapt"
    if density < 1:
        label += f" {round(density * 100)}%"
    return label


# --- layer pickers ----------------------------------------------------------------------------------------

class LayerPicker(QComboBox):
    """A combo box of the viewer's layers that pass `accepts` (newest first), optionally with a 'none'
    entry; the owner keeps it in step with the layer list (`GapFillWidget._picker`)."""

    changed = Signal(object)

    def __init__(self, viewer, accepts: Callable[[object], bool], *, none: str | None = None, tooltip: str = ""):
        super().__init__()
        self.viewer, self.accepts, self.none = viewer, accepts, none
        self._layers: list = []
        self.setToolTip(tooltip)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.currentIndexChanged.connect(lambda _: self.changed.emit(self.value))
        self.refresh()

    @property
    def value(self):
        index = self.currentIndex()
        return self._layers[index] if 0 <= index < len(self._layers) else None

    @value.setter
    def value(self, layer) -> None:
        self.refresh()
        for i, candidate in enumerate(self._layers):
            if candidate is layer:
                self.setCurrentIndex(i)
                return
        if layer is not None:
            raise ValueError(f"layer {getattr(layer, 'name', layer)!r} is not a choice here")

    def refresh(self) -> None:
        """Rebuild the choices; the current layer stays chosen while it exists."""
        current = self.value
        layers = [layer for layer in reversed(list(self.viewer.layers)) if self.accepts(layer)]
        choices = ([None] if self.none is not None else []) + layers
        self.blockSignals(True)
        self.clear()
        self._layers = choices
        self.addItems([self.none if layer is None else layer.name for layer in choices])
        index = next((i for i, layer in enumerate(choices) if layer is current and current is not None), 0)
        self.setCurrentIndex(index if choices else -1)
        self.blockSignals(False)
        if self.value is not current:
            self.changed.emit(self.value)


def _is_composite(layer) -> bool:
    return COMPOSITE_KEY in layer.metadata


def _is_bands(layer) -> bool:
    """Layers that hold bands: images, but not our RGB composites nor our results (a filled mean would be
    filled again). An RGB layer opened by another reader counts (its three channels are the bands)."""
    from napari.layers import Image

    return isinstance(layer, Image) and not _is_composite(layer) and RESULT_KEY not in layer.metadata


def _is_mask(layer) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def _is_savable(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


# --- the running job --------------------------------------------------------------------------------------

@dataclass
class Job:
    """One run of Run: what is filled, with what, where its results go, and its worker."""

    source: str  # the bands layer's name when the run started (the layer may be renamed or removed later)
    scene: Scene
    mask: np.ndarray
    methods: list[str]
    density: float
    device: str
    placement: dict | None  # the source layer's scale, translate and units: every result gets them
    reference: object = None  # what fill(reference=…) gets: a Scene (aligned by fill) or an array
    reference_name: str = ""
    adapt_steps: int = 0
    show_std: bool = False
    biharmonic_weight: float | None = None  # None: the ConvNP chooses it on the scene
    cancel: threading.Event = field(default_factory=threading.Event)
    scores: dict = field(default_factory=dict)
    worker: object = None

    def label(self, method: str) -> str:
        return result_label(method, self.density, self.reference is not None and uses_reference(method),
                            self.adapt_steps > 0 and method == "convnp")


@dataclass
class Failure:
    """A method that could not fill (bad input for it, or an error inside): reported, the others go on."""

    job: Job
    method: str
    message: str


class _Progress(QObject):
    """Carries tile progress from the worker thread to the progress bar (queued across threads)."""

    changed = Signal(int, int, str)


def _device_choices() -> list[str]:
    """The registry's devices (options.DEVICES and its cuda:N) that exist here: auto, every GPU, cpu."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["auto", *(["cuda", *(f"cuda:{n}" for n in range(1, gpus))] if gpus else []), "cpu"]


def _device_note() -> str:
    import torch

    if torch.cuda.is_available():
        return f"found GPU: {torch.cuda.get_device_name(0)}"
    return "no CUDA GPU found: running on the CPU"


def _mask_colours():
    """Pixels to fill in magenta, a colour no Landsat composite has: the gaps stand out."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "magenta"})


KNOWN_COLOUR = "#606060"  # a variance of exactly 0 (a known pixel): neutral grey, unlike magma and unlike no value


def variance_colormap():
    """magma for the variance in the gaps; known pixels (variance 0, certain) in grey; pixels without a
    value (NaN: nodata not filled, such as the off-scene border) transparent, as napari shows no data. So
    'certain' and 'unknown' never look alike, and no colour leaks through layers stacked above."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    magma = ensure_colormap("magma")
    return Colormap(colors=magma.colors, controls=magma.controls, name="variance (magma)",
                    low_color=KNOWN_COLOUR, nan_color="transparent")


def _canvas_grid(viewer):
    canvas = getattr(viewer, "canvas", None)
    return getattr(canvas, "grid", None) or viewer.grid


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
                ("Open file…", self._open_file, "Open a GeoTIFF (1–11 bands; nodata as NaN, a nodata tag or 0)"),
                ("Open product folder…", self._open_folder,
                 "Open a Landsat product folder (*_B1.TIF … *_MTL.txt); the 15 m pan band is left out")):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(slot)
            row.addWidget(button)
        form.addRow(row)
        self.image_combo = self._picker(
            _is_bands, on_change=self._on_scene_changed,
            tooltip="The image layer whose bands are filled: a scene opened here, by the reader, or by napari's "
                    "own TIFF reader (then nodata and georeferencing are read again from its file)")
        form.addRow("Bands layer", self.image_combo)
        self.composite = QComboBox()
        self.composite.setToolTip("Which bands to show as red, green and blue (2–98 % stretch), numbered as the "
                                  "sensor numbers them: Landsat 8/9 bands are one higher than Landsat 7's")
        self.composite.currentTextChanged.connect(self._show_composite)
        form.addRow("RGB composite", self.composite)
        self.reader_pref = QCheckBox("open .tif files with this plugin")
        self.reader_pref.setToolTip(
            "Drag and drop and File › Open use this plugin for .tif/.tiff without asking (napari's reader "
            "preference; change it in Preferences › Plugins). TIFFs that are not GeoTIFFs still go to other readers.")
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
                                   whole_scene=c * h * w > STREAM_RESULTS_VALUES)

    def _open_file(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open a Landsat GeoTIFF", "", "GeoTIFF (*.tif *.tiff *.TIF)")
        if path:
            self.load(path)

    def _open_folder(self):
        path = QFileDialog.getExistingDirectory(self, "Open a Landsat product folder")
        if path:
            self.load(path)

    def _layer_scene(self, layer) -> tuple[Scene, Scene | None]:
        """(the scene to fill, the scene as read from its file) of a bands layer.

        A layer from this plugin carries its Scene. A layer opened by another reader (napari's builtins
        give an int16 RGB layer with -999 values) is read again from its file, when it has one, so its
        nodata, band names and georeferencing are known; else its pixels are the bands and NaN is nodata."""
        source = layer.metadata.get(SCENE_KEY)
        if source is None and layer.metadata.get(FROM_FILE_KEY) is not False:  # False: its file did not fit
            path = getattr(getattr(layer, "source", None), "path", None)
            if path:
                try:
                    source = read_scene(path)
                except SceneError:
                    source = None
                if source is not None and source.shape in _layouts(layer):
                    layer.metadata[SCENE_KEY] = source
                    layer.metadata[FROM_FILE_KEY] = True
                else:
                    source = None
                    layer.metadata[FROM_FILE_KEY] = False  # read once, not on every picker change
        if source is not None and (layer.metadata.get(FROM_FILE_KEY) or layer.data is source.bands):
            return source, source
        bands = _bands_first(layer)
        return scene_of(bands, {"metadata": layer.metadata}), source

    def _scene(self):
        """The chosen bands layer, its scene and its source scene; InputError when there is none."""
        layer = self.image_combo.value
        if layer is None:
            raise InputError("no bands layer: open a scene first (Open file…, drag and drop, or a sample)")
        scene, source = self._layer_scene(layer)
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
                scene, source = self._layer_scene(layer)
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
                ("Detect gaps", self.detect, "Find the scan-line gaps and small holes (not the off-scene border, "
                                             "not large blank areas, not dark water stored as 0)"),
                ("Simulate SLC-off", self.simulate, "Hide known pixels under realistic SLC-off stripes, so the "
                                                    "fill can be scored against the truth (PSNR, SSIM, RMSE)"),
                ("New paint layer", self.new_paint_layer, "An empty mask to paint the pixels to fill on")):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(slot)
            row.addWidget(button)
        form.addRow(row)
        self.seed = QSpinBox()
        self.seed.setRange(0, 10**6)
        self.seed.setToolTip("Random seed of the simulated stripes: the same seed gives the same stripes")
        form.addRow("Simulation seed", self.seed)
        self.mask_combo = self._picker(_is_mask, on_change=lambda _: self._clear_scores(),
                                       tooltip="The Labels layer whose nonzero pixels are filled")
        form.addRow("Mask layer", self.mask_combo)
        row = QHBoxLayout()
        self.combine_op = QComboBox()
        self.combine_op.addItems(["union with", "subtract"])
        self.combine_op.setToolTip("union: pixels in either mask; subtract: pixels of the mask above not in the other")
        row.addWidget(self.combine_op)
        self.other_combo = self._picker(_is_mask, tooltip="The second mask to combine with the mask layer")
        row.addWidget(self.other_combo, 1)
        combine = QPushButton("Combine")
        combine.setToolTip("Make a new mask from the two")
        combine.clicked.connect(self.combine)
        row.addWidget(combine)
        form.addRow(row)
        return box

    def _find(self, source: str, kind: str):
        return next((lay for lay in self.viewer.layers
                     if lay.metadata.get(RESULT_KEY, {}).get("source") == source
                     and lay.metadata.get(RESULT_KEY, {}).get("kind") == kind), None)

    def _name(self, base: str, source: str) -> str:
        """`base` while it is free; a name of another scene's layer gets that scene's name after it."""
        return base if base not in self.viewer.layers else f"{base} · {source}"

    def _add_mask(self, mask: np.ndarray, kind: str, layer, source_scene: Scene | None, **metadata):
        """A mask layer over `layer` (same scale and translate); re-detecting or re-simulating replaces it."""
        data = mask.astype(np.uint8)
        meta = {RESULT_KEY: {"source": layer.name, "kind": kind}, **metadata}
        if source_scene is not None:
            meta[SCENE_KEY] = source_scene  # so a saved mask keeps the scene's georeferencing
        existing = self._find(layer.name, kind)
        if existing is not None and existing.data.shape == data.shape:
            existing.data = data
            existing.metadata.update(meta)
            mask_layer = existing
        else:
            mask_layer = self.viewer.add_labels(data, name=self._name(kind, layer.name), opacity=0.5, metadata=meta,
                                                colormap=_mask_colours(),
                                                **fit_placement(layer_placement(layer), data.ndim))
        self.mask_combo.value = mask_layer
        self._clear_scores()
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
                                   show, whole_scene=scene.bands.size > STREAM_RESULTS_VALUES)

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
        self._clear_scores()
        return layer

    # --- 3. inpaint ------------------------------------------------------------------------------------
    def _inpaint_box(self):
        box = QGroupBox("3. Inpaint")
        form = QFormLayout(box)
        self.reference_combo = self._picker(_is_bands, none="none (one date)", on_change=self._on_reference_changed)
        form.addRow("Reference (other date)", self.reference_combo)
        self.reference_combo.setToolTip(
            "Another date of the same place (a loaded bands layer) as extra context: the ConvNP uses it "
            "where it agrees with the scene; the two-date methods need one. Aligned by georeferencing.")
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
        self.density.setToolTip(
            "Context density: the share of the known pixels the method may use (a seeded random subsample). "
            "100 % uses them all; lower values show how the fill and its variance degrade with less data.")
        self.density_label = QLabel("100 %")
        self.density.valueChanged.connect(lambda v: self.density_label.setText(f"{v} %"))
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
        tip = ("Test-time adaptation: fine-tune the ConvNP on this scene's own known pixels for this many "
               "steps before filling (ConvNP only; slower; a small gain, see the README)")
        self.adapt.setToolTip(tip)
        self.adapt_steps.setToolTip(tip)
        row.addWidget(self.adapt)
        row.addWidget(self.adapt_steps)
        form.addRow(row)
        self.blend = QSpinBox()
        self.blend.setRange(-1, 100)
        self.blend.setValue(-1)
        self.blend.setSuffix(" %")
        self.blend.setSpecialValueText("chosen on the scene")  # shown at -1
        self.blend.setToolTip(
            "ConvNP: the share of the biharmonic fill in the mean where no reference is known. The two err "
            "differently, so a blend beats both; by default the share is chosen on the scene's own known "
            "pixels. 0 % is the network alone (about a quarter faster).")
        form.addRow("Biharmonic in the mean", self.blend)
        self.device = QComboBox()
        self.device.addItems(_device_choices())
        self.device.setToolTip("Where the ConvNP runs: auto takes the GPU when torch finds one (the classical "
                               "methods run on the CPU)")
        form.addRow("Device", self.device)
        form.addRow("", QLabel(_device_note()))
        self.show_std = QCheckBox("also show the standard deviation")
        self.show_std.setToolTip("Add a layer with the square root of the variance (in the data's units)")
        form.addRow(self.show_std)
        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Fill the mask with each ticked method, one after another, in the background")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current tile; results already made stay")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.grid_button = QPushButton("Side by side")
        self.grid_button.setToolTip("napari's grid: the bands and every result in its own labelled cell, all "
                                    "fitted; masks and RGB composites are hidden meanwhile")
        self.grid_button.setCheckable(True)
        self.grid_button.toggled.connect(lambda on: setattr(self.grid, "enabled", on))
        for w in (self.run_button, self.cancel_button, self.grid_button):
            row.addWidget(w)
        form.addRow(row)
        self.progress = QProgressBar()
        self.progress.setToolTip("Tiles done of the method running now")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addRow(self.progress)
        form.addRow(self.status)
        self.scores_caption = QLabel("")
        self.scores_caption.setWordWrap(True)
        form.addRow(self.scores_caption)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["method", "PSNR dB", "SSIM", "RMSE"])
        self.table.setToolTip("Scores on the hidden pixels of a simulated mask, where the truth is known; SSIM "
                              "over windows free of nodata")
        self.table.setMinimumHeight(150)
        self.table.verticalHeader().setVisible(False)
        form.addRow(self.table)
        self._on_reference_changed(None)
        return box

    def _on_reference_changed(self, layer):
        for method, box in self.method_boxes.items():
            if method in NEEDS_REFERENCE:
                box.setEnabled(layer is not None)
                if layer is None:
                    box.setChecked(False)
                box.setToolTip(method_description(method) + ("" if layer is not None else
                                                             " Needs a reference (other date): choose one above."))

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
        ref_scene, ref_source = self._layer_scene(ref_layer)
        reference = ref_source or ref_scene
        try:  # its grid, once before the run (cheap, on the GUI thread), not once per method in the fills
            grid_offset(scene, reference)
        except ValueError as err:
            raise InputError(f"the reference '{ref_layer.name}' does not fit this scene: {err}") from None
        return reference, ref_layer.name

    def _inputs(self) -> Job:
        """Everything a run needs, checked; InputError names what is missing."""
        layer, scene, source = self._scene()
        mask_layer = self.mask_combo.value
        if mask_layer is None:
            raise InputError("no mask layer: detect, simulate or paint one first")
        mask = np.asarray(mask_layer.data) != 0
        if mask.shape[-2:] != scene.shape[1:]:
            raise InputError(f"the mask '{mask_layer.name}' {mask.shape} does not fit the scene {scene.shape}")
        mask = masks.validate_mask(mask, scene.shape, fillable=~scene.nodata)
        methods = self.selected_methods()
        if not methods:
            raise InputError("choose at least one method")
        reference, reference_name = self._reference_for(layer, scene, source)
        adapt = self.adapt_steps.value() if self.adapt.isChecked() else 0
        blend = None if self.blend.value() < 0 else self.blend.value() / 100
        return Job(layer.name, scene, mask, methods, self.density.value() / 100, self.device.currentText(),
                   layer_placement(layer), reference, reference_name, adapt, self.show_std.isChecked(), blend)

    @_reports_input_errors
    def run(self):
        """Start the fill in a thread worker; the viewer stays responsive."""
        if self.worker is not None:
            raise InputError("busy: a fill, or reading or detecting a scene, is running; wait for it or cancel "
                             "the fill")
        job = self._inputs()
        from napari.qt.threading import create_worker

        self.job = job
        self._clear_scores()
        self.progress.setRange(0, 0)  # busy until the first tile reports: never the last run's 100 %
        job.worker = create_worker(self._work, job, _ignore_errors=True)  # _on_error reports them
        job.worker.yielded.connect(self._on_result)
        job.worker.errored.connect(self._on_error)
        job.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        with_ref = f" with reference '{job.reference_name}'" if job.reference is not None else ""
        self.status.setText(f"filling {mask_pixels(job.mask)} pixels of {job.source} with "
                            f"{', '.join(job.methods)}{with_ref}…")
        job.worker.start()
        return job

    def _work(self, job: Job):
        """Runs in the worker thread: one method after another, each result (and its scores) yielded as it ends."""
        nodata = job.scene.nodata  # fill fills nodata pixels in the mask (the mask wins), keeps the others
        # band by band: no scene-sized temporaries
        truth_known = all(np.isfinite(band[gaps]).all() for band, gaps in zip(job.scene.bands, job.mask))
        data_range = None
        for method in job.methods:
            if job.cancel.is_set():
                return
            report = lambda done, total, m=method: self._progress.changed.emit(done, total, m)  # noqa: E731
            options = {}
            if job.reference is not None and uses_reference(method):
                options["reference"] = job.reference
                if not isinstance(job.reference, np.ndarray):
                    options["scene"] = job.scene  # fill aligns the reference Scene to this one
            if job.adapt_steps and method == "convnp":
                options["adapt_steps"] = job.adapt_steps
            if job.biharmonic_weight is not None and method == "convnp":
                options["biharmonic_weight"] = job.biharmonic_weight
            options.update(method=method, density=job.density, nodata=nodata, device=job.device, progress=report,
                           cancelled=job.cancel.is_set)
            try:
                if job.scene.bands.size > STREAM_RESULTS_VALUES:
                    result, sample = _fill_streamed(job, options)
                else:
                    result = fill(job.scene.bands, job.mask, **options)
                    sample = None
            except Cancelled:
                return
            except (FillError, SceneError, RuntimeError) as err:  # this method cannot: say so, go on with the
                yield Failure(job, method, str(err))  # others (a RuntimeError raised out of here hangs superqt)
                continue
            scores = None
            if truth_known:  # scored here, off the GUI thread (seconds on a large scene)
                if data_range is None:
                    data_range = float(np.nanmax(job.scene.bands) - np.nanmin(job.scene.bands)) or 1.0
                scores = metrics.scores(result.mean, job.scene.bands, job.mask, data_range)
            yield job, method, result, scores, _display(result, job, sample)

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

    def _on_progress(self, done, total, method):
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        adapting = self.job is not None and self.job.adapt_steps and method == "convnp"
        what = "adaptation steps, then tiles" if adapting else "tiles"
        self.status.setText(f"{method}: {done} of {total} {what}")

    def _result_layer(self, job: Job, data, label: str, kind: str, **kwargs):
        """Replace the data of this run's earlier layer of the same label and kind, or add one."""
        meta = {SCENE_KEY: job.scene, RESULT_KEY: {"source": job.source, "label": label, "kind": kind}}
        existing = next((lay for lay in self.viewer.layers if lay.metadata.get(RESULT_KEY) == meta[RESULT_KEY]), None)
        if existing is not None and existing.data.shape == data.shape:
            existing.data = data
            for key, value in kwargs.items():
                setattr(existing, key, value)
            existing.metadata.update(meta)
            layer = existing
        else:
            layer = self.viewer.add_image(data, name=self._name(f"{label} {kind}", job.source), metadata=meta,
                                          **fit_placement(job.placement, data.ndim), **kwargs)
        return layer

    def _on_result(self, item):
        if isinstance(item, Failure):
            label = item.job.label(item.method)
            _notify_error(f"fill failed: {label}: {item.message}")
            self.status.setText(f"{label} failed: {item.message}")
            return
        job, method, result, scores, display = item
        label = job.label(method)
        mean = self._result_layer(job, result.mean, label, "mean", contrast_limits=display["mean"])
        if result.variance is not None:
            self._result_layer(job, result.variance, label, "variance", colormap=variance_colormap(),
                               contrast_limits=display["variance"])
            if display.get("std") is not None:
                self._result_layer(job, display["std"], label, "std", colormap="viridis",
                                   contrast_limits=display["std_limits"])
        self.save_combo.value = mean  # Save offers the newest result
        if scores is not None:
            job.scores[label] = scores
            if self.job is job:
                self._show_scores(job)
        if self.grid.enabled:
            self._label_cells()
            self.viewer.reset_view()
        self.status.setText(f"{label} done in {result.seconds:.1f} s on {result.device}{calibration_note(result)}")

    def _show_scores(self, job: Job):
        hidden = mask_pixels(job.mask)
        ref = f", reference '{job.reference_name}'" if job.reference is not None else ""
        self.scores_caption.setText(f"{job.source}: scores on the {hidden} hidden pixels{ref}")
        self.table.setRowCount(len(job.scores))
        for row, (label, s) in enumerate(job.scores.items()):
            ssim = "–" if not np.isfinite(s["ssim"]) else f"{s['ssim']:.3f}"
            for col, text in enumerate([label, f"{s['psnr']:.2f}", ssim, f"{s['rmse']:.4g}"]):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.table.resizeColumnToContents(0)

    def _clear_scores(self):
        """Scores and status belong to one scene and one mask: another choice clears them."""
        if self.worker is not None:
            return  # the running job owns them until it ends
        self.table.setRowCount(0)
        self.scores_caption.setText("")
        self.status.setText("")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _on_error(self, err):
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        _notify_error(f"fill failed: {err}")

    def _on_finished(self):
        job = self.job
        if job is not None:
            job.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:  # still busy: no method got as far as its first tile
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        if job is not None and job.cancel.is_set():
            self.progress.setValue(0)
            self.status.setText("cancelled: the results already shown stay; the cancelled method left none")

    # --- side by side ----------------------------------------------------------------------------------
    def _label_cells(self):
        """Show each layer's name in its grid cell, in a smaller font when it is long for the cell (a Landsat
        product name, a grid of many columns), so that it does not run into the next cell's label."""
        columns = max(1, self.grid.actual_shape(self.viewer.layers)[1])
        cell = self.viewer.canvas.size[1] / columns - LABEL_MARGIN  # pixels
        for layer in self.viewer.layers:
            overlay = getattr(layer, "name_overlay", None)
            if overlay is not None:
                overlay.font_size = max(5.0, min(10.0, cell / LABEL_CHARACTER_WIDTH / max(len(layer.name), 1)))
                overlay.visible = True

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
        if on:
            self._grid_hidden = [lay for lay in self.viewer.layers
                                 if lay.visible and (_is_mask(lay) or _is_composite(lay))]
            for layer in self._grid_hidden:
                layer.visible = False
            bands = self.image_combo.value  # the scene itself gets a cell, beside its results
            self._grid_shown = [bands] if bands is not None and not bands.visible else []
            for layer in self._grid_shown:
                layer.visible = True
            self._label_cells()
        else:
            for layer in self._grid_hidden:
                if layer in self.viewer.layers:
                    layer.visible = True
            for layer in self._grid_shown:
                if layer in self.viewer.layers:
                    layer.visible = False
            self._grid_hidden, self._grid_shown = [], []
            for layer in self.viewer.layers:
                overlay = getattr(layer, "name_overlay", None)
                if overlay is not None:
                    overlay.visible = False
        self.viewer.reset_view()

    # --- 4. save ---------------------------------------------------------------------------------------
    def _save_box(self):
        box = QGroupBox("4. Save")
        row = QHBoxLayout(box)
        self.save_combo = self._picker(_is_savable, tooltip="The layer to write; after a run, its newest result")
        row.addWidget(self.save_combo, 1)
        button = QPushButton("Save GeoTIFF…")
        button.setToolTip("Write the layer as float32 GeoTIFF with its scene's georeferencing; never over an input")
        button.clicked.connect(self._save_dialog)
        row.addWidget(button)
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
            write_image(str(path), layer.data, {"metadata": layer.metadata, "rgb": layer.rgb})
        except SceneError as err:
            _notify_error(str(err))
            return False
        _notify_info(f"saved {layer.name} to {path}")
        return True


@functools.lru_cache(maxsize=1)
def results_folder() -> Path:
    """Where this napari session's streamed results go; removed when Python exits."""
    folder = Path(tempfile.mkdtemp(prefix="napari-convnp-results-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def calibration_note(result) -> str:
    """What the ConvNP chose on this scene, for the status line: the blend weights of its mean and, with a
    reference, how far the intervals where it is known were widened."""
    if result.biharmonic_weight is None:
        return ""
    if result.reference_variance_factor is None:
        return f"; {result.biharmonic_weight:.0%} biharmonic in the mean"
    return (f"; where the reference is known: mean {result.reference_base_weight:.0%} reference base + "
            f"{result.multiband_weight:.0%} multiband fill, intervals "
            f"×{result.reference_variance_factor ** 0.5:.2f}; elsewhere {result.biharmonic_weight:.0%} biharmonic")


def _fill_streamed(job: Job, options: dict):
    """The fill of a whole scene: its mean and variance are streamed into GeoTIFFs in `results_folder()` and
    come back as lazy arrays read from them; every step-th row and column is kept on the way (about
    _napari.DISPLAY_SAMPLE values), for the display limits. Returns (Fill, (mean, variance, mask) of that sample)."""
    step = display_step(job.scene.bands.size)
    means, variances = [], []

    def keep(r0, mean, variance):
        first = -r0 % step  # the rows of this band whose index is a multiple of step
        means.append(mean[:, first::step, ::step].copy())
        if variance is not None:
            variances.append(variance[:, first::step, ::step].copy())

    result, mean_path, variance_path = fill_to_files(job.scene.bands, job.mask, results_folder(), like=job.scene,
                                                     name=f"{job.source} {job.label(options['method'])}",
                                                     on_rows=keep, **options)
    result = dataclasses.replace(result, mean=lazy_image(mean_path),
                                 variance=lazy_image(variance_path) if variance_path else None)
    sample = (np.concatenate(means, 1), np.concatenate(variances, 1) if variances else None,
              job.mask[:, ::step, ::step])
    return result, sample


def _display(result, job: Job, sample=None) -> dict:
    """Contrast limits (and the standard deviation) of a result, worked out in the worker thread: on a
    whole scene these percentiles take seconds the GUI would freeze for. sample: (mean, variance, mask)
    of a streamed result, subsampled, for the limits; its standard deviation stays lazy."""
    mean, variance, mask = sample or (result.mean, result.variance, job.mask)
    out = {"mean": contrast_limits(mean)}
    if variance is not None:
        in_gaps = variance[mask]
        in_gaps = in_gaps[np.isfinite(in_gaps)]
        top = float(np.percentile(in_gaps, 90)) if in_gaps.size else 1.0  # the tail would wash it out
        out["variance"] = (0.0, top or 1.0)
        if job.show_std:
            out["std"] = np.sqrt(result.variance)
            out["std_limits"] = (0.0, float(np.sqrt(top)) or 1.0)
    return out


def mask_pixels(mask: np.ndarray) -> int:
    """Pixels marked in any band (a C×H×W mask counts a pixel once, not once per band)."""
    mask = np.asarray(mask)
    return int(np.count_nonzero(mask.any(0) if mask.ndim == 3 else mask))


def default_filename(layer) -> str:
    """'<scene>_<method>_<kind>.tif' for a result (its layer name leaves the scene out), else the layer name."""
    info = layer.metadata.get(RESULT_KEY)
    if info and info.get("label"):
        stem = f"{info['source']}_{info['label']}_{info['kind']}"
    else:
        stem = layer.name
    for old, new in ((" ", "_"), ("%", "pct"), ("+", "_"), ("·", ""), ("__", "_")):
        stem = stem.replace(old, new)
    return f"{stem}.tif"


def show_scale_bar(viewer) -> None:
    """napari 0.9 keeps the scale bar among the canvas overlays (`viewer.scale_bar` warns there); older ones on
    the viewer."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    bar = overlays["scale_bar"] if overlays is not None and "scale_bar" in overlays else getattr(viewer, "scale_bar",
                                                                                                    None)
    if bar is not None:
        bar.visible = True


MAX_BANDS_LAST = 32  # a 3-D layer whose last axis is at most this long, and its first longer, has its bands last


def _bands_last(layer) -> bool:
    """An RGB layer's colour axis, or the short last axis of a multi-band GeoTIFF as napari's builtin reader
    gives it (H×W×C, not RGB), holds the bands."""
    shape = np.shape(layer.data)
    return len(shape) == 3 and (getattr(layer, "rgb", False) or shape[2] <= MAX_BANDS_LAST < shape[0])


def _layouts(layer) -> tuple[tuple[int, ...], ...]:
    """The C×H×W shapes a layer's pixels can be: bands first, or bands last (from its shape: no pixel read)."""
    shape = tuple(np.shape(layer.data))
    if len(shape) == 2:
        return ((1, *shape),)
    if len(shape) == 3:
        return shape, (shape[2], shape[0], shape[1])
    return (_bands_first(layer).shape,)  # raises: not bands × rows × columns


def _bands_first(layer) -> np.ndarray:
    """A layer's pixels as C×H×W (bands last, `_bands_last`, are moved first)."""
    data = np.asarray(layer.data)
    if _bands_last(layer):
        data = np.moveaxis(data, -1, 0)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"'{layer.name}' has shape {data.shape}: not bands × rows × columns")
    return data
