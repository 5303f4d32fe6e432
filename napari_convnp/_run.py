"""The run: a Job (what is filled, with what), filled in a thread worker one method after another, in memory
or, for a whole scene, streamed to files and read back lazily."""
from __future__ import annotations

import atexit
import dataclasses
import functools
import gc
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from qtpy.QtCore import QObject, Signal

from . import metrics
from ._layers import _display, mask_pixels, result_label, uses_reference
from ._napari import composite_limits, default_composite, display_step, lazy_image, stretch
from .fileio import clip_fill, fill_to_files, source_range
from .inpaint import Cancelled, FillError, fill
from .landsat import composites
from .masks import MaskError, validate_mask
from .scene import Scene, SceneError

# Results of scenes with more values than this (4096²×4) are streamed to files and shown read back window by
# window, not held in memory: a whole Landsat scene's mean and variance would take 2.7 GB.
STREAM_RESULTS_VALUES = 2 ** 26


def whole_scene(values: int) -> bool:
    """Whether a scene of this many values is read, detected and filled off the GUI thread, streamed."""
    return values > STREAM_RESULTS_VALUES


@dataclass
class Job:
    """One run of Run: what is filled, with what, where its results go, and its worker."""

    source: str  # the bands layer's name when the run started (the layer may be renamed or removed later)
    scene: Scene
    mask: np.ndarray  # the pixels to fill, or (before `prepare`) a mask layer's data, nonzero = fill
    methods: list[str]
    density: float
    device: str
    placement: dict | None  # the source layer's scale, translate and units: every result gets them
    reference: object = None  # what fill(reference=…) gets: a Scene (aligned by fill) or an array
    reference_name: str = ""
    adapt_steps: int = 0
    show_std: bool = False
    biharmonic_weight: float | None = None  # None: the ConvNP chooses it on the scene
    mask_name: str = ""  # the mask layer's name when the run started: results of another mask are kept apart
    replace: bool = False  # results of another mask or reference replace the earlier ones of their label
    invert_mask: bool = False  # the mask layer's 0 marks the pixels to fill (`layer_mask`)
    mask_scene: Scene | None = None  # the mask layer's own scene (a mask file's): where it has no data, no fill
    pixels: int = 0  # pixels to fill (in any band), counted by `prepare`
    cancel: threading.Event = field(default_factory=threading.Event)
    scores: dict = field(default_factory=dict)
    worker: object = None

    def prepare(self) -> None:
        """The mask layer's data as the pixels to fill, checked, and counted: passes over the whole scene that
        take seconds on a large one, so the worker makes them, not the GUI thread. Raises MaskError."""
        self.mask = validate_mask(layer_mask(self.mask, self.invert_mask, self.mask_scene), self.scene.shape,
                                  fillable=~self.scene.nodata)
        self.pixels = mask_pixels(self.mask)

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
    """Carries the phases (done, total, what: total 0 while unknown) from the worker thread to the progress bar
    and the status line (queued across threads)."""

    changed = Signal(int, int, str)


class ActivityBar:
    """The run in napari's activity dock (a napari.utils.progress), named by its phase as it goes."""

    def __init__(self, description: str):
        from napari.utils import progress

        self.bar = progress(total=0, desc=description)

    def show(self, done: int, total: int, description: str) -> None:
        if self.bar.total != total:
            self.bar.total = total
        self.bar.set_description(description)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def layer_mask(data, invert: bool = False, own_scene: Scene | None = None) -> np.ndarray:
    """The pixels a mask layer marks to fill: nonzero, or with `invert` zero (masks that mark the valid pixels, as
    the CLI's --invert-mask) except where the layer's own scene (the mask file it was read from) has no data.
    A layer the same in every band (simulated stripes, a mask file) gives H×W: a whole scene's bands-fold copy less."""
    data = np.asarray(data)
    if data.ndim == 3 and len(data) > 1 and all(np.array_equal(data[0], plane) for plane in data[1:]):
        data = data[0]
    if not invert:
        return data != 0
    marked = data == 0
    if own_scene is not None and own_scene.shape[1:] == data.shape[-2:]:
        nodata = np.asarray(own_scene.nodata)
        marked &= ~(nodata if nodata.shape == marked.shape else nodata.all(0))
    return marked


# seconds a thread may keep the GIL while another waits for it, during background work (Python's default: 5 ms). Each
# call of the GUI thread into Python (napari's event filter, a widget's size hint) otherwise waits up to 5 ms behind a
# worker running Python code: a status line's layout pass took 0.18-0.48 s so, 0.04-0.11 s at 1 ms (2-core AMD EPYC)
BACKGROUND_SWITCH_INTERVAL = 0.001
_background_tasks = 0
_switch_interval_before = None


def start_background_work() -> None:
    """At the start of a task in a worker thread (a run, a whole scene's reading): napari's process set up for the GUI
    to stay responsive while it runs. The objects napari and Qt already hold (about half a million) are left out of
    the garbage collector's full passes while the task allocates: each pass over them held the GIL, and so the GUI,
    0.24-0.38 s during a whole 7000x8000 scene's run; frozen, a pass took 0.02-0.06 s. And the GIL changes hands
    every BACKGROUND_SWITCH_INTERVAL. `end_background_work` at the task's end undoes both (nothing frozen stays
    uncollectable); tasks of several docks at once count."""
    global _background_tasks, _switch_interval_before
    if not _background_tasks:
        _switch_interval_before = sys.getswitchinterval()
        sys.setswitchinterval(min(_switch_interval_before, BACKGROUND_SWITCH_INTERVAL))
    _background_tasks += 1
    gc.freeze()


def end_background_work() -> None:
    global _background_tasks
    if not _background_tasks:
        return
    _background_tasks -= 1
    if not _background_tasks:
        gc.unfreeze()
        sys.setswitchinterval(_switch_interval_before)


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


@functools.lru_cache(maxsize=1)
def results_folder() -> Path:
    """Where this napari session's streamed results go; removed when Python exits."""
    folder = Path(tempfile.mkdtemp(prefix="napari-convnp-results-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def calibration_note(result) -> str:
    """What the ConvNP chose on this scene, for the status line: the blend weights of its mean and, with a
    reference, how far the intervals where it is known were widened; then the fill's notes (a poor reference)."""
    notes = "".join(f"; {note}" for note in result.notes)
    if result.biharmonic_weight is None:
        return notes
    if result.reference_variance_factor is None:
        return f"; {result.biharmonic_weight:.0%} biharmonic in the mean{notes}"
    return (f"; where the reference is known: mean {result.reference_base_weight:.0%} reference base + "
            f"{result.multiband_weight:.0%} multiband fill, intervals "
            f"×{result.reference_variance_factor ** 0.5:.2f}; elsewhere {result.biharmonic_weight:.0%} biharmonic"
            f"{notes}")


# A streamed result's layer keeps every k-th row and column in memory, k such that this many fit the longer side: the
# level napari shows while the whole scene is in view, reading the file only for the part in view when zoomed in.
PREVIEW_SIDE = 2048


def preview_step(shape) -> int:
    """k of a scene of this shape (bands, rows, columns); for one that fits PREVIEW_SIDE (many bands), that of an
    even sample for its display limits (`display_step`); 1: all of it (then no preview level)."""
    k = -(-max(shape[-2:]) // PREVIEW_SIDE)
    return k if k > 1 else display_step(int(np.prod(shape)))


def _fill_streamed(job: Job, options: dict):
    """The fill of a whole scene: its mean and variance are streamed into GeoTIFFs in `results_folder()` and
    come back as lazy arrays read from them. On the way, every preview_step-th row and column is kept (the layers'
    low level and their display limits) and the mean's default RGB composite made (stretched as the scene's own).
    Returns (Fill, preview: {"mean", "variance", "mask", "rgb"}: the mask is the preview's, the rgb whole)."""
    step = preview_step(job.scene.shape)
    choice = default_composite(job.scene)
    channels = composites(job.scene)[choice] if choice is not None else ()
    limits = composite_limits(job.scene, choice) if choice is not None else None
    rgb = np.zeros((*job.scene.shape[1:], 3), np.uint8) if channels else None
    means, variances = [], []

    def keep(r0, mean, variance):
        first = -r0 % step  # the rows of this band whose index is a multiple of step
        means.append(mean[:, first::step, ::step].copy())
        if variance is not None:
            variances.append(variance[:, first::step, ::step].copy())
        if rgb is not None:
            for channel, (band, lim) in enumerate(zip(channels, limits)):
                rgb[r0:r0 + mean.shape[1], :, channel] = stretch(mean[band], lim)

    result, mean_path, variance_path = fill_to_files(job.scene.bands, job.mask, results_folder(), like=job.scene,
                                                     name=f"{job.source} {job.label(options['method'])}",
                                                     on_rows=keep, **options)
    result = dataclasses.replace(result, mean=lazy_image(mean_path),
                                 variance=lazy_image(variance_path) if variance_path else None)
    preview = {"mean": np.concatenate(means, 1), "variance": np.concatenate(variances, 1) if variances else None,
               "mask": job.mask[:, ::step, ::step], "rgb": rgb, "step": step}
    return result, preview


def work(job: Job, progress: Callable[[int, int, str], None]):
    """Runs in the worker thread: the mask prepared, then one method after another, each result (and its scores)
    yielded as it ends; progress(done, total, what) at every step of every phase (`inpaint.fill`'s on_phase)."""
    progress(0, 0, f"preparing the mask '{job.mask_name}'")
    try:
        job.prepare()
    except MaskError as err:
        yield Failure(job, "mask", str(err))
        return
    nodata = job.scene.nodata  # fill fills nodata pixels in the mask (the mask wins), keeps the others
    progress(0, 0, f"{job.pixels} pixels to fill; checking whether their values are known (to score the fills)")
    # band by band: no scene-sized temporaries
    truth_known = all(np.isfinite(band[gaps]).all() for band, gaps in zip(job.scene.bands, job.mask))
    data_range = None
    for i, method in enumerate(job.methods):
        if job.cancel.is_set():
            return
        of = f" (method {i + 1} of {len(job.methods)})" if len(job.methods) > 1 else ""
        report = lambda text, done, total, of=of: progress(done, total, text + of)  # noqa: E731
        options = {}
        if job.reference is not None and uses_reference(method):
            options["reference"] = job.reference
            if not isinstance(job.reference, np.ndarray):
                options["scene"] = job.scene  # fill aligns the reference Scene to this one
        if job.adapt_steps and method == "convnp":
            options["adapt_steps"] = job.adapt_steps
        if job.biharmonic_weight is not None and method == "convnp":
            options["biharmonic_weight"] = job.biharmonic_weight
        options.update(method=method, density=job.density, nodata=nodata, device=job.device, on_phase=report,
                       cancelled=job.cancel.is_set)
        try:
            if whole_scene(job.scene.bands.size):
                result, preview = _fill_streamed(job, options)
            else:
                result = fill(job.scene.bands, job.mask, **options)
                clip_fill(result.mean, source_range(job.scene.source_dtype))  # as every file output is
                preview = None
        except Cancelled:
            return
        except (FillError, SceneError, RuntimeError) as err:  # this method cannot: say so, go on with the
            yield Failure(job, method, str(err))  # others (a RuntimeError raised out of here hangs superqt)
            continue
        scores = None
        report(f"{method}: scoring and display limits", 0, 0)
        if truth_known:  # scored here, off the GUI thread (seconds on a large scene)
            if data_range is None:
                data_range = float(np.nanmax(job.scene.bands) - np.nanmin(job.scene.bands)) or 1.0
            scores = metrics.scores(result.mean, job.scene.bands, job.mask, data_range, result.variance)
        yield job, method, result, scores, _display(result, job, preview)


def start(job: Job, progress: Callable[[int, int, str], None], *, yielded, errored, finished):
    """`work` on the job in a napari thread worker (job.worker), its signals connected, started."""
    from napari.qt.threading import create_worker

    job.worker = create_worker(work, job, progress, _ignore_errors=True)  # errored reports them
    job.worker.yielded.connect(yielded)
    job.worker.errored.connect(errored)
    job.worker.finished.connect(finished)
    job.worker.start()
    return job.worker
