"""The stack dock: the dates of one place as one layer with a date axis (`_napari.stack_layers`), the date on
screen or every date filled from the others (`stack_fill.fill_stack`, one date at a time in a thread worker, so
each date shows as it ends and Cancel keeps those done), and the references the date on screen was filled from."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import options
from ._layers import (
    RESULT_KEY,
    InputError,
    canvas_overlay,
    layer_name,
    layer_placement,
    show_scale_bar,
    variance_colormap,
)
from ._napari import STACK_KEY, fit_placement, stack_layers
from ._pickers import LayerPicker, button
from ._run import _device_choices, _Progress, end_background_work, start_background_work
from ._tooltips import TOOLTIPS
from ._widget import _notify_error, _reports_input_errors
from .errors import ConvNPError
from .fusion import MAX_REFERENCES
from .inpaint import Cancelled
from .stack import Stack, read_stack
from .stack_fill import StackFill, fill_stack

STACK_METHODS = ("convnp", *sorted(options.NEEDS_REFERENCE))  # fill_stack gives each its fused reference
TOPS_KEY = "napari_convnp_variance_tops"  # a stack variance's metadata: {date index: the top of its display}
REFERENCES_KEY = "napari_convnp_references"  # a stack mean's metadata: {date index: the line saying what filled it}

@dataclass
class StackJob:
    """One run of the stack dock: which dates of which stack are filled, with what, and its worker."""

    source: str  # the stack layer's name when the run started
    stack: Stack
    targets: list[int]
    method: str
    device: str
    max_references: int
    fill_clouds: bool
    cancel: threading.Event = field(default_factory=threading.Event)
    worker: object = None
    filled: int = 0  # dates filled so far
    left: dict = field(default_factory=dict)  # why dates were left as they are (nothing to fill…): how many


NOTHING_TO_FILL = "nothing to fill: no pixel of it is missing or unusable"


def work(job: StackJob, progress):
    """In the worker thread: each target date filled from the others, yielded as (date index, StackFill or None,
    why not, top of its variance display); progress(dates done, dates, what runs now)."""
    bands = [scene.bands for scene in job.stack.scenes]
    count = len(job.targets)
    for done, t in enumerate(job.targets):
        if job.cancel.is_set():
            return
        what = f"date {done + 1} of {count} ({job.stack.dates[t]})"
        progress(done, count, f"{what}: choosing its references…")

        def report(tile, tiles, what=what, done=done):
            progress(done, count, f"{what}: {tile} of {tiles} tiles")

        try:
            [result] = fill_stack(bands, job.stack.unusable, job.stack.dates, targets=[t],
                                  max_references=job.max_references, fill_clouds=job.fill_clouds,
                                  cloudy=job.stack.cloudy, progress=report, cancelled=job.cancel.is_set,
                                  method=job.method, device=job.device)
        except Cancelled:
            return
        except (ConvNPError, RuntimeError) as err:  # this date cannot: say so, go on
            yield t, None, str(err), None
            continue
        if not result.filled_values:  # a clear date: nothing to fill, shown as it is
            yield t, None, NOTHING_TO_FILL, None
            continue
        yield t, result, "", _variance_top(result)


def _variance_top(result: StackFill) -> float | None:
    """The 90th percentile of a date's variance in its holes (the tail would wash the colours out)."""
    variance = result.fill.variance
    if variance is None:
        return None
    positive = variance[np.isfinite(variance) & (variance > 0)]
    return float(np.percentile(positive, 90)) if positive.size else None


def references_line(stack: Stack, t: int, result: StackFill) -> str:
    """'from 2008-06-14 (+48 days, weight 0.42), …': the dates a date was filled from, nearest first."""
    if not result.references:
        return "from itself alone: no other date knows its holes"
    parts = [f"{stack.dates[i]} ({(stack.dates[i] - stack.dates[t]).days:+d} days, weight {weight:.2f})"
             for i, weight in sorted(result.references, key=lambda r: abs((stack.dates[r[0]] - stack.dates[t]).days))]
    return "from " + ", ".join(parts)


class StackWidget(QWidget):
    """Fill every date of a stack of Landsat scenes of one place from the others."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)  # as GapFillWidget: layers by identity
        self.job: StackJob | None = None
        self._reading = None
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        layout.addLayout(form)
        row = QHBoxLayout()
        for text, slot, tip in (("Open a stack of dates…", self._open_folder, "stack open folder"),
                                ("Open dates (files)…", self._open_files, "stack open files")):
            row.addWidget(button(text, slot, TOOLTIPS[tip]))
        form.addRow(row)
        self.stack_combo = LayerPicker(self.viewer, lambda layer: STACK_KEY in layer.metadata
                                       and RESULT_KEY not in layer.metadata and layer.ndim == 4,
                                       tooltip=TOOLTIPS["stack stack"])
        self.stack_combo.changed.connect(self._show_date)
        form.addRow("Stack", self.stack_combo)
        self.method = QComboBox()
        self.method.addItems(STACK_METHODS)
        self.method.setToolTip(TOOLTIPS["stack method"])
        form.addRow("Method", self.method)
        self.max_references = QSpinBox()
        self.max_references.setRange(1, 20)
        self.max_references.setValue(MAX_REFERENCES)
        self.max_references.setToolTip(TOOLTIPS["stack references"])
        form.addRow("Other dates per date, at most", self.max_references)
        self.fill_clouds = QCheckBox("also fill clouds and shadows")
        self.fill_clouds.setToolTip(TOOLTIPS["stack clouds"])
        form.addRow(self.fill_clouds)
        self.device = QComboBox()
        self.device.addItems(_device_choices())
        self.device.setToolTip(TOOLTIPS["device"])
        form.addRow("Device", self.device)
        row = QHBoxLayout()
        self.fill_date_button = button("Fill this date", lambda: self.fill(every=False), TOOLTIPS["stack this date"])
        self.fill_all_button = button("Fill every date", lambda: self.fill(every=True), TOOLTIPS["stack every date"])
        self.cancel_button = button("Cancel", self.cancel, "")
        self.cancel_button.setEnabled(False)
        for push in (self.fill_date_button, self.fill_all_button, self.cancel_button):
            row.addWidget(push)
        form.addRow(row)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addRow(self.progress)
        form.addRow(self.status)
        self.date_line = QLabel("")  # the date on screen and what it was filled from; follows the date slider
        self.date_line.setWordWrap(True)
        layout.addWidget(self.date_line)
        layout.addStretch(1)
        for event in ("inserted", "removed", "moved", "reordered"):
            getattr(self.viewer.layers.events, event).connect(self._refresh)
        self.viewer.dims.events.current_step.connect(self._show_date)
        self._show_date()

    @property
    def worker(self):
        """The running thread worker (a stack fill, or reading a stack), None when idle."""
        return (self.job.worker if self.job is not None else None) or self._reading

    def _refresh(self, *_):
        try:
            self.stack_combo.refresh()
        except RuntimeError:  # the dock was closed and Qt deleted the combo box
            pass

    # --- opening ------------------------------------------------------------------------------------------
    def _open_folder(self):
        path = QFileDialog.getExistingDirectory(self, "Open a folder of dates of one place")
        if path:
            self.load(path)

    def _open_files(self, *_):
        paths, _ = QFileDialog.getOpenFileNames(self, "Open dates of one place", "", "GeoTIFF (*.tif *.tiff *.TIF)")
        if paths:
            self.load(paths)

    @_reports_input_errors
    def load(self, inputs):
        """Read a stack (a folder, files or product folders) in a thread worker and show it as one layer with a
        date axis and its 'unusable' masks; a date without a date, twice, or off the grid becomes a notification."""
        if self.worker is not None:
            raise InputError("busy: wait until the stack fill ends, or cancel it")
        from napari.qt.threading import create_worker

        def show(layers):
            added = [getattr(self.viewer, f"add_{kind}")(data, **kwargs) for data, kwargs, kind in layers]
            if "scale" in layers[0][1]:  # georeferenced: the scale bar measures metres
                show_scale_bar(self.viewer)
            self.stack_combo.value = added[0]
            self.viewer.reset_view()

        def finished():
            self._reading = None
            self.progress.setRange(0, 1)
            self._show_date()

        self._reading = create_worker(lambda: stack_layers(read_stack(inputs)), _ignore_errors=True)
        self._reading.returned.connect(show)
        self._reading.errored.connect(lambda err: _notify_error(str(err) if isinstance(err, ConvNPError)
                                                                else f"reading the stack failed: {err}"))
        self._reading.finished.connect(finished)
        what = Path(inputs).name if isinstance(inputs, (str, os.PathLike)) else f"{len(inputs)} files"
        self.status.setText(f"reading the dates of {what}…")
        self.progress.setRange(0, 0)
        self._reading.start()
        return self._reading

    # --- the date on screen ---------------------------------------------------------------------------------
    def current_date(self) -> int | None:
        """The index of the date the slider shows in the chosen stack (napari aligns layers on their last axes)."""
        layer = self.stack_combo.value
        if layer is None or self.viewer.dims.ndim < 4:
            return None
        point = self.viewer.dims.point[-4]
        index = round((point - layer.translate[0]) / layer.scale[0])
        return min(max(index, 0), len(layer.metadata[STACK_KEY]) - 1)

    def _show_date(self, *_):
        """The date on screen, on the canvas and in the dock, with what it was filled from."""
        try:
            layer, t = self.stack_combo.value, self.current_date()
        except RuntimeError:  # the dock was closed; the viewer's slider goes on without it
            return
        text = canvas_overlay(self.viewer, "text")
        if layer is None or t is None:
            self.date_line.setText("")
            if text is not None:
                text.visible = False
            return
        stack = layer.metadata[STACK_KEY]
        lines = [f"<b>{stack.dates[t]}</b> — date {t + 1} of {len(stack)}: {stack.paths[t].name}"]
        for mean in self._means(layer.name):
            said = mean.metadata[REFERENCES_KEY].get(t)
            lines.append(f"{mean.name}: {said or 'not filled yet'}")
        if len(lines) == 1:
            lines.append("not filled yet: Fill this date, or Fill every date")
        self.date_line.setText("<br>".join(lines))
        if text is not None:
            text.text, text.visible = f"{stack.dates[t]}  (date {t + 1} of {len(stack)})", True

    def _means(self, source: str) -> list:
        return [lay for lay in self.viewer.layers if REFERENCES_KEY in lay.metadata
                and lay.metadata.get(RESULT_KEY, {}).get("source") == source]

    # --- filling ------------------------------------------------------------------------------------------
    @_reports_input_errors
    def fill(self, every: bool = True):
        """Fill every date (or the one on screen) from the others in a thread worker; the viewer stays
        responsive and each date shows as it ends."""
        if self.worker is not None:
            raise InputError("busy: a stack fill or reading a stack is running; wait for it or cancel it")
        layer = self.stack_combo.value
        if layer is None:
            raise InputError("no stack: open a folder of dates (Open a stack of dates…) first")
        stack = layer.metadata[STACK_KEY]
        if len(stack) < 2:
            raise InputError(f"'{layer.name}' holds one date: a stack fill needs other dates to fill it from")
        targets = list(range(len(stack))) if every else [self.current_date()]
        job = StackJob(layer.name, stack, targets, self.method.currentText(), self.device.currentText(),
                       self.max_references.value(), self.fill_clouds.isChecked())
        self.job = job
        self.progress.setRange(0, len(targets))
        self.progress.setValue(0)
        for push in (self.fill_date_button, self.fill_all_button):
            push.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"filling {len(targets)} of the {len(stack)} dates of {layer.name} with {job.method}…")
        from napari.qt.threading import create_worker

        job.worker = create_worker(work, job, self._progress.changed.emit, _ignore_errors=True)
        job.worker.yielded.connect(self._on_date)
        job.worker.errored.connect(lambda err: _notify_error(f"stack fill failed: {err}"))
        job.worker.finished.connect(self._on_finished)
        start_background_work()  # ended by `_on_finished`
        job.worker.start()
        return job

    def cancel(self):
        if self.worker is None:  # nothing running (the last fill may have ended just before): nothing to say
            return
        if self.job is not None:
            self.job.cancel.set()
        self.worker.quit()
        self.status.setText("cancelling after the current tile…")

    def event(self, event):
        """Closing the dock cancels a running fill (as the fill dock does)."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None and self.worker is not None:
            self.cancel()
        return super().event(event)

    def _on_progress(self, done, total, what):
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.status.setText(what)

    def _result(self, job: StackJob, kind: str, **kwargs):
        """The stack of results of this kind ('convnp stack mean') over the job's stack: found again, or made
        empty (NaN: not filled yet) on its date axis, over the stack layer."""
        shape = (len(job.stack), *job.stack.scenes[0].shape)
        existing = next((lay for lay in self.viewer.layers if lay.data.shape == shape
                         and lay.metadata.get(RESULT_KEY, {}).get("source") == job.source
                         and lay.metadata[RESULT_KEY].get("kind") == kind), None)
        if existing is not None:
            return existing
        source = self.viewer.layers[job.source] if job.source in self.viewer.layers else None
        placement = fit_placement(layer_placement(source), 4) if source is not None else {}
        meta = {RESULT_KEY: {"source": job.source, "label": job.method, "kind": kind}, STACK_KEY: job.stack}
        return self.viewer.add_image(np.full(shape, np.nan, np.float32), name=layer_name(self.viewer, kind, job.source),
                                     metadata=meta, axis_labels=("date", "band", "y", "x"), **placement, **kwargs)

    def _on_date(self, item):
        """One date filled (or not, and why): its slot in the mean and variance stacks, and its references."""
        t, result, why, top = item
        job = self.job
        source = self.viewer.layers[job.source] if job.source in self.viewer.layers else None
        mean = self._result(job, f"{job.method} stack mean", colormap="gray",
                            contrast_limits=source.contrast_limits if source is not None else None)
        mean.metadata.setdefault(REFERENCES_KEY, {})
        if result is None:
            mean.data[t] = job.stack.scenes[t].bands
            job.left[why] = job.left.get(why, 0) + 1
            mean.metadata[REFERENCES_KEY][t] = f"not filled ({why}); shown as it is"
        else:
            mean.data[t] = result.fill.mean
            job.filled += 1
            mean.metadata[REFERENCES_KEY][t] = f"{job.method} " + references_line(job.stack, t, result)
        mean.refresh()
        if result is not None and result.fill.variance is not None:
            variance = self._result(job, f"{job.method} stack variance", colormap=variance_colormap(),
                                    contrast_limits=(0.0, top or 1.0))
            variance.data[t] = result.fill.variance
            tops = variance.metadata.setdefault(TOPS_KEY, {})
            if top:  # one contrast for every date: the median date's, so one very unsure date does not wash out
                tops[t] = top  # the rest (it saturates instead)
                variance.contrast_limits = (0.0, float(np.median(list(tops.values()))))
            variance.refresh()
        self._show_date()

    def _on_finished(self):
        end_background_work()
        job = self.job
        job.worker = None
        for push in (self.fill_date_button, self.fill_all_button):
            push.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if job.cancel.is_set():
            self.status.setText("cancelled: the dates already filled stay; the others are not filled")
        else:
            self.progress.setValue(self.progress.maximum())
            left = "".join(f"; {count} left as they are: {why}" for why, count in job.left.items())
            self.status.setText(f"{job.filled} of the {len(job.stack)} dates of {job.source} filled with "
                                f"{job.method}{left}")
