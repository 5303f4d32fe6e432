"""From (bands, mask, density, device) to a Fill: validation, normalisation, tiling, blending.

One entry point, `fill`, for the ConvNP and the classical baselines alike.
"""
from __future__ import annotations

import functools
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import baselines, options
from .errors import Cancelled, FillError, OptionError, SceneError  # noqa: F401 - Cancelled: the API's name for it
from .masks import MaskError, validate_mask
from .options import METHODS, NEEDS_REFERENCE, PRECISIONS, FillOptions  # noqa: F401 - importable from here too
from .scene import check_float32_precision
from .system import check_memory
from .tiling import DEFAULT_TILE, axis_tiles, predict_rows, tile_grid, tile_starts  # noqa: F401
from .views import EXACT_IN_FLOAT32, BandWindows, FloatView

CALIBRATE_ON_SCENE = True  # the biharmonic blend, and the variance where a reference is known, chosen on the scene
# A reference whose held-out fit (`fusion.held_out_error`) leaves more than this share of the scene's variance gets a
# note: dates of the same place stayed at or under 0.85 but for cloudy dates and a dam collapse, dates of elsewhere
# were 0.965 or more (train/ and val pairs, benchmarks/reference_check.py).
POOR_REFERENCE_ERROR = 0.9


@dataclass
class Fill:
    """The result: `mean` has the input's values where known and the fill in the mask; `variance`
    is the predictive variance in the mask, 0 where known (None for the classical fills). Pixels
    that were nodata and not in the mask stay NaN in both. Both are None when `fill` streamed them
    (on_rows)."""

    mean: np.ndarray
    variance: np.ndarray | None
    method: str
    density: float
    device: str
    seconds: float
    # with a reference: how much the variance where it is known was widened (> 1) or narrowed for this scene
    reference_variance_factor: float | None = None
    # the ConvNP: the weight of the biharmonic fill in its mean where no reference is known, chosen on this scene
    biharmonic_weight: float | None = None
    # with a reference: the weights of the classical two-date fills in the mean where the reference is known
    # (model.blend_reference_fills), chosen on this scene
    reference_base_weight: float | None = None
    multiband_weight: float | None = None
    # the ConvNP's arithmetic as it ran (bfloat16 asked for on a CPU without it runs in float32; `run_precision`)
    precision: str | None = None
    # with references: how badly the best of them predicts the scene where both are known (`fusion.held_out_error`:
    # 0 perfect, about 1 no better than the scene's mean)
    reference_error: float | None = None
    # one-line notes on the result the caller should see (a reference that predicts the scene poorly)
    notes: list[str] = field(default_factory=list)


# what the ConvNP chose on a scene (calibration.scene_calibration), as Fill reports it
CALIBRATION_KEYS = ("reference_variance_factor", "biharmonic_weight", "reference_base_weight", "multiband_weight")


def check_biharmonic_weight(weight, method: str) -> None:
    """A blend weight the caller fixes: a number in [0, 1], and only for the ConvNP (the one fill that blends)."""
    check_fill_options(method=method, density=1.0, seed=0, tile=None, precision="float32",
                       biharmonic_weight=weight)


def check_fill_options(*, method: str, density, seed, tile, precision: str, adapt_steps=0,
                       biharmonic_weight=None) -> None:
    """Raise FillError for option values that cannot work, before any pixel is read (`options.FillOptions`
    holds the rules)."""
    try:
        FillOptions(method=method, density=density, seed=seed, tile=tile, precision=precision,
                    adapt_steps=adapt_steps, biharmonic_weight=biharmonic_weight,
                    references=("a reference",) if method in NEEDS_REFERENCE else ()).validate()
    except OptionError as err:
        raise FillError(str(err)) from None


def resolve_device(device: str = "auto") -> str:
    """`options.resolve_device`, its error a FillError as `fill` raises."""
    try:
        return options.resolve_device(device)
    except OptionError as err:
        raise FillError(str(err)) from None


def run_precision(device: str, precision: str) -> tuple[str, str | None]:
    """The ConvNP's arithmetic on this device, and a one-line note where bfloat16 was asked for on a CPU that
    does not run it natively (it then runs in float32: emulated bfloat16 is many times slower)."""
    if precision != "bfloat16" or not resolve_device(device).startswith("cpu"):
        return precision, None
    from .cpu_kernels import cpu_precision

    return cpu_precision(precision)


def fill(bands: np.ndarray, mask: np.ndarray, *, method: str = "convnp", density: float = 1.0,
         nodata: np.ndarray | None = None, device: str = "auto", seed: int = 0, tile: int | None = None,
         progress: Callable[[int, int], None] | None = None, cancelled: Callable[[], bool] | None = None,
         model=None, precision: str = "float32", reference=None, scene=None, adapt_steps: int = 0,
         on_rows: Callable[[int, np.ndarray, np.ndarray | None], None] | None = None,
         biharmonic_weight: float | None = None, on_phase: Callable[[str, int, int], None] | None = None) -> Fill:
    """Fill the masked pixels of `bands` (C×H×W; H×W is one band).

    mask: True = fill (C×H×W, or H×W for every band). nodata: pixels with no value that are not to
    be filled (off-scene); NaN pixels must be in one of the two. density in (0, 1]: the fraction
    of known pixels the method may use as context, a seeded random subsample. precision: the
    ConvNP's arithmetic, "float32" or "bfloat16" (faster on some CPUs with AVX-512 BF16 or AMX, and GPUs).
    reference: other dates of the same place as context: one or a list of C×H×W arrays on the grid of
    `bands` (NaN = unknown), or of GeoTIFF / Landsat folder paths or Scenes, aligned to `scene` (the Scene
    `bands` came from) by their georeferencing, several fused into one weighted pixel by pixel by how well each
    predicts the scene there (`fusion.fuse_references`). adapt_steps: fine-tune a copy of the ConvNP on the
    scene itself for this many steps first (test-time adaptation; 0 = off).
    biharmonic_weight: the ConvNP's share of the biharmonic fill in its mean where no reference is known, in
    [0, 1]; None (the default) chooses it on the scene's own known pixels; 0 is the network alone, about a
    quarter faster (no biharmonic solve, and without a reference no scene calibration).
    on_rows: stream the result instead of returning it: called as on_rows(first row, mean, variance) with
    bands of rows (C×n×W, as `Fill` describes them; variance None for the classical fills), top to bottom,
    each as soon as it is final; the returned Fill then has mean and variance None. The ConvNP's memory is
    then bounded by the input and a row of tiles.
    on_phase: called as on_phase(text, done, total) at every step of every phase, the text naming it for a
    person ('calibrating on the scene: 3 of 16 tasks', 'biharmonic: band 2 of 6'; total 0: a phase of unknown
    length has begun): `progress` counts only adaptation steps and tiles, so a long calibration or a classical
    fill would otherwise look stuck.
    """
    start = time.time()
    references = () if reference is None else tuple(reference) if isinstance(reference, (list, tuple)) else (
        reference,)
    try:
        _check_arguments(progress=progress, cancelled=cancelled, on_rows=on_rows, model=model, scene=scene,
                         references=references, on_phase=on_phase)
        given = FillOptions(method=method, density=density, device=device, seed=seed, tile=tile,
                            precision=precision, references=references, adapt_steps=adapt_steps,
                            biharmonic_weight=biharmonic_weight).validate()
    except OptionError as err:
        raise FillError(str(err)) from None
    seed, tile, adapt_steps = given.seed, given.tile, given.adapt_steps
    if not isinstance(bands, FloatView):  # a FloatView converts window by window as the fill reads it
        bands = _float32_bands(bands, nodata)
    if bands.ndim == 2:
        bands = bands[None]
    if bands.ndim != 3:
        raise FillError(f"bands must be C×H×W or H×W, not shape {bands.shape}")
    try:  # the mask, context, mean and variance (unless streamed), besides the bands themselves
        per_value = 10 if on_rows is None or method != "convnp" else 3
        check_memory(bands.size * per_value, f"filling a {'×'.join(map(str, bands.shape))} scene")
    except SceneError as err:
        raise FillError(str(err)) from None
    if on_phase:
        on_phase("checking the mask and the known pixels", 0, 0)
    reference = _reference(reference, bands.shape, scene)
    if method in NEEDS_REFERENCE and reference is None:
        raise FillError(f"method '{method}' fills from another date: give a reference scene")
    # None when there is none: every pass over the scene then skips it (a full scene's pass costs seconds)
    if nodata is not None:
        nodata = _nodata_for(nodata, bands.shape)
        nodata = nodata if nodata.any() else None
    try:
        mask = validate_mask(mask, bands.shape)
    except MaskError as err:
        raise FillError(str(err)) from None
    known = KnownPixels(mask, nodata)
    bad, empty = 0, []
    for b, (band_known, band) in enumerate(zip(known, bands)):  # band by band: no scene-sized temporaries
        bad += np.count_nonzero(band_known & ~np.isfinite(band))
        if not band_known.any():
            empty.append(b + 1)
    if len(empty) == len(bands):
        raise FillError("the mask covers every pixel: there are no known pixels left to fill from")
    if bad:
        raise FillError(f"{bad} known pixels are NaN or infinite; mark them as nodata or in the mask")
    reference_error, notes = _reference_check(bands, known, reference, references)
    if isinstance(reference, list):  # several dates: one reference on this scene's scale, weighted pixel by pixel
        from .fusion import fuse_references

        reference = fuse_references(bands, known, reference, parts=("reference",)).reference
    context = known
    if density < 1:  # a seeded subsample, drawn band by band to bound the memory
        rng = np.random.default_rng(seed)
        context = np.stack([k & (rng.random(k.shape, dtype=np.float32) < density) for k in known])
        empty = [b + 1 for b, band_context in enumerate(context) if not band_context.any()]
    if empty:
        raise FillError(f"band {empty[0]} has no known pixels to fill from (all missing)")
    # The whole result in memory: the ConvNP's rows are copied straight into it (its pages touched once).
    out = None if on_rows is not None or method != "convnp" else (np.empty(bands.shape, np.float32),
                                                                  np.empty(bands.shape, np.float32))
    calibration = {}  # what the ConvNP learnt of this scene (calibration.scene_calibration)
    if method == "convnp":
        device = resolve_device(device)
        precision, note = run_precision(device, precision)
        if note:
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        parts = _convnp(bands, context, device, tile, progress, cancelled, model, precision, reference, mask,
                        int(adapt_steps), seed, out, calibration, biharmonic_weight, on_phase)
    else:
        device = "cpu"
        if progress:
            progress(0, 1)
        parts = [(0, _classical(method, bands, np.asarray(context), reference, on_phase), None)]
        if progress:
            progress(1, 1)
    mean, variance = out or (None, None)
    for r0, rows_mean, rows_var in parts:
        rows = slice(r0, r0 + rows_mean.shape[1])
        # In place, band by band: the results may be as large as the scene.
        for b in range(len(bands)):
            given = ~mask[b, rows]
            np.copyto(rows_mean[b], bands[b, rows], where=given)
            if rows_var is not None:
                np.copyto(rows_var[b], 0, where=given)
            if nodata is not None:
                lost = nodata[b, rows] & given
                for part in (rows_mean, rows_var) if rows_var is not None else (rows_mean,):
                    np.copyto(part[b], np.nan, where=lost)
        rows_mean = rows_mean.astype(np.float32, copy=False)
        if on_rows is not None:
            on_rows(r0, rows_mean, rows_var)
        elif out is None:  # a classical fill: one piece, the whole scene
            mean = rows_mean
        del rows_mean, rows_var  # not held while the next rows are computed
    return Fill(mean, variance, method, density, device, time.time() - start,
                *(calibration.get(key) for key in CALIBRATION_KEYS), precision if method == "convnp" else None,
                reference_error, notes)


def _reference_check(bands, known, reference, items) -> tuple[float | None, list[str]]:
    """How badly the best of the references predicts the scene where both are known, and a note naming each that
    predicts it poorly: a reference of elsewhere (a wrong file of two without georeferencing) is otherwise taken
    silently, its intervals barely wider. Each is measured as given, before any fusion (which fits them to the
    scene locally and would hide it)."""
    if reference is None:
        return None, []
    from .fusion import held_out_error
    from .scene import Scene

    arrays = reference if isinstance(reference, list) else [reference]
    errors = [held_out_error(bands, known, array) for array in arrays]
    notes = []
    for number, (item, error) in enumerate(zip(items, errors), 1):
        if error > POOR_REFERENCE_ERROR:
            name = (f"reference {Path(item).name}" if options.is_path(item) else f"reference {item.name}"
                    if isinstance(item, Scene) else "the reference array" if len(items) == 1
                    else f"reference {number} (an array)")
            notes.append(f"{name} predicts the scene poorly where both are known (held-out error {error:.2f} of "
                         f"the scene's variance, above {POOR_REFERENCE_ERROR:g}): check it is the same place, on "
                         "the same grid, and clear of clouds")
    return min(errors), notes


def _check_arguments(*, progress, cancelled, on_rows, model, scene, references, on_phase=None) -> None:
    """`fill`'s arguments that are not options, checked for their type before any work: a wrong one fails
    now with its name, not as a foreign error minutes later."""
    from .scene import Scene

    for name, value in (("progress", progress), ("cancelled", cancelled), ("on_rows", on_rows),
                        ("on_phase", on_phase)):
        options.check_callable(value, name)
    if scene is not None and not isinstance(scene, Scene):
        raise OptionError(f"scene must be the Scene the bands were read from (scene.read_scene), not "
                          f"{type(scene).__name__}")
    if model is not None and not (callable(model) and hasattr(model, "config")):
        raise OptionError(f"model must be ConvNP weights loaded by model.load_model, not {type(model).__name__}")
    for item in references:
        if options.is_path(item) or isinstance(item, Scene):
            continue
        kind = item.dtype.kind if isinstance(item, np.ndarray) else None
        if kind == "c":
            raise OptionError("reference: complex pixels are not supported: give real values (e.g. the magnitudes)")
        if kind not in tuple("biuf"):
            raise OptionError(f"reference must be a file name, a Scene or an array of numbers (or a list of them), "
                              f"not {type(item).__name__}{f' of {item.dtype}' if kind else ''}")


def _float32_bands(bands, nodata) -> np.ndarray:
    """The pixels as the float32 the fill works in; a clear error for what is not numbers or loses its detail."""
    if isinstance(bands, (str, os.PathLike)):
        raise FillError(f"fill takes pixels, not a file name ({bands}): read it with scene.read_scene, or fill file "
                        "to file with fileio.fill_file")
    raw = np.asarray(bands)
    if raw.dtype.kind == "c":
        raise FillError("complex pixels are not supported: give real values (e.g. the magnitudes)")
    if raw.dtype.kind not in "biuf":
        raise FillError(f"the pixels must be numbers, not {raw.dtype} values")
    if raw.dtype.str not in EXACT_IN_FLOAT32 and raw.ndim in (2, 3):
        shaped = raw if raw.ndim == 3 else raw[None]
        try:
            check_float32_precision(shaped, _nodata_for(False if nodata is None else nodata, shaped.shape),
                                    "the scene")
        except SceneError as err:
            raise FillError(str(err)) from None
    with np.errstate(over="ignore", invalid="ignore"):
        values = raw.astype(np.float32, copy=False)
    if raw.dtype.kind == "f" and raw.dtype.itemsize > 4 and np.isinf(values).sum() > np.isinf(raw).sum():
        raise FillError("some values lie beyond ±3.4e38, the float32 range the fill works in: rescale them or "
                        "mark them as nodata")
    return values


def _nodata_for(nodata, shape) -> np.ndarray:
    """The nodata argument as a read-only C×H×W bool view; a clear error where its shape does not fit."""
    nodata = np.asarray(nodata, bool)
    try:
        return np.broadcast_to(nodata, shape)
    except ValueError:
        raise FillError(f"nodata has shape {nodata.shape}, which does not fit the scene's {shape}") from None


class KnownPixels(BandWindows):
    """The known pixels of a scene (neither to fill nor nodata), computed window by window: the whole
    C×H×W array is 100 MB at 4096²×6."""

    def __init__(self, mask: np.ndarray, nodata: np.ndarray | None):
        self.mask, self.nodata, self.shape = mask, nodata, mask.shape

    def __getitem__(self, index) -> np.ndarray:
        known = ~self.mask[index]
        if self.nodata is not None:
            known &= ~self.nodata[index]
        return known


class ReferenceKnown(BandWindows):
    """Where the reference is known, window by window."""

    def __init__(self, reference):
        self.reference, self.shape = reference, reference.shape

    def __getitem__(self, index) -> np.ndarray:
        return np.isfinite(self.reference[index])


class NormalisedReference(BandWindows):
    """The reference z-scored with its own per-band statistics, 0 where unknown, window by window (a whole
    scene's normalised copy is 1.3 GB)."""

    def __init__(self, reference, offsets: np.ndarray, scales: np.ndarray):
        self.reference, self.shape = reference, reference.shape
        self.offsets, self.scales = offsets[:, None, None], scales[:, None, None]

    def __getitem__(self, index) -> np.ndarray:
        values = np.asarray(self.reference[index], np.float32)
        offsets = np.broadcast_to(self.offsets, self.shape)[index]  # the window's bands, shaped like values
        scales = np.broadcast_to(self.scales, self.shape)[index]
        return np.where(np.isfinite(values), (values - offsets) / scales, 0).astype(np.float32)


def _reference(reference, shape, scene) -> np.ndarray | None:
    """The reference as a C×H×W float32 array on the grid of the bands (NaN = unknown; one reference given
    as a file or Scene is cut window by window from it as the fill reads it), a list of them where several are
    given (`fill` fuses them on the scene, `fusion.fuse_references`), or None."""
    if reference is None or (isinstance(reference, (list, tuple)) and not reference):
        return None
    from .reference import load_reference
    from .scene import Scene

    items = reference if isinstance(reference, (list, tuple)) else [reference]
    if scene is None:  # plain arrays: a reference file can only be aligned pixel for pixel
        scene = Scene(np.broadcast_to(np.float32(0), shape), [f"band {i + 1}" for i in range(shape[0])],
                      np.broadcast_to(False, shape))
    try:
        arrays = [load_reference(item, scene) for item in items]
    except SceneError as err:
        raise FillError(str(err)) from None
    return arrays if len(arrays) > 1 else arrays[0]


@functools.lru_cache(maxsize=2)
def _cached_model(device: str):
    from .model import load_model

    return load_model(device=device)


def _convnp(bands, context, device, tile, progress, cancelled, model, precision, reference=None, gaps=None,
            adapt_steps=0, seed=0, out=None, calibration=None, biharmonic_weight=None, on_phase=None):
    """Tiled ConvCNP inference (after test-time adaptation, if asked); yields (first row, mean, variance)
    for bands of rows, top to bottom, in the input's units (see `predict_rows`), as numpy arrays: views of
    `out` (the whole result's mean and variance) when given. calibration: a dict that gets what
    `calibration.scene_calibration` chose for this scene; biharmonic_weight: None, or the blend weight the caller
    fixed (not chosen on the scene)."""
    import torch

    from .adapt import adapt_model, can_adapt
    from .calibration import calibrated, scene_calibration
    from .model import band_stats

    model = model or _cached_model(device)
    if adapt_steps and not can_adapt(model, *bands.shape[1:]):  # refused, not skipped and then reported as done
        raise FillError(f"a {bands.shape[1]}×{bands.shape[2]} scene is too small to adapt to (tasks need at "
                        f"least {2 * model.multiple}×{2 * model.multiple} pixels); leave adaptation off")
    offsets, scales = band_stats(bands, context)
    if reference is not None:
        if not model.config.reference:
            raise FillError("these ConvNP weights take no reference (other date); use the shipped weights")
        ref_known = ReferenceKnown(reference)
        reference = (NormalisedReference(reference, *band_stats(reference, ref_known)), ref_known)
    tile = tile or (2048 if device.startswith("cuda") else DEFAULT_TILE)
    if adapt_steps:
        n_tiles = len(tile_grid(bands.shape[1], tile, model.multiple)) * len(tile_grid(bands.shape[2], tile,
                                                                                      model.multiple))
        total = adapt_steps + n_tiles  # one progress bar over adaptation steps and tiles
        model = adapt_model(model, bands, offsets, scales, context, gaps, adapt_steps, reference=reference,
                            seed=seed, device=device, precision=precision, cancelled=cancelled,
                            progress=_every(progress and (lambda step, _: progress(step, total)),
                                            _phase(on_phase, "adapting to the scene: {done} of {total} steps")))
        if progress:
            tile_progress = progress
            progress = lambda done, n: tile_progress(adapt_steps + done, adapt_steps + n)  # noqa: E731
    choose_blend = biharmonic_weight is None and model.config.biharmonic_weight > 0
    if biharmonic_weight is not None:
        model = calibrated(model, biharmonic_weight=float(biharmonic_weight))
        if calibration is not None:
            calibration["biharmonic_weight"] = float(biharmonic_weight)
    if CALIBRATE_ON_SCENE and (reference is not None or choose_blend):
        found = scene_calibration(model, bands, offsets, scales, context, gaps, reference, seed=seed, device=device,
                                  precision=precision, choose_blend=choose_blend, cancelled=cancelled,
                                  progress=_phase(on_phase, "calibrating on the scene: {done} of {total} tasks"))
        model = calibrated(model, **found)
        if calibration is not None:
            calibration.update(found)
    emitted = 0  # rows already handed on: a retry on smaller tiles goes on below them
    while True:
        try:
            tiles = _every(progress, _phase(on_phase, "convnp: {done} of {total} tiles"))
            for r0, mean, variance in predict_rows(model, bands, context, offsets, scales, tile, device, tiles,
                                                   cancelled, precision, reference, gaps):
                n, skip = mean.shape[1], max(0, emitted - r0)
                if skip < n:
                    yield r0 + skip, *_to_host((mean[:, skip:], variance[:, skip:]), out, r0 + skip)
                    emitted = r0 + n
                del mean, variance  # not held (on the GPU) while the next row of tiles is computed
            return
        except torch.OutOfMemoryError:
            if tile <= 128:
                raise FillError("out of memory even on 128-pixel tiles; free GPU memory or use device 'cpu'") from None
            torch.cuda.empty_cache()
            tile //= 2  # CUDA ran out of memory: retry with tiles a quarter of the size
            warnings.warn(f"the GPU ran out of memory; going on with {tile}-pixel tiles", RuntimeWarning,
                          stacklevel=2)
        except (RuntimeError, MemoryError) as err:
            if isinstance(err, MemoryError) or "memory" in str(err).lower():
                raise FillError(f"out of memory on a {tile}-pixel tile ({err}); try a smaller --tile") from None
            raise


def _classical(method: str, bands, context: np.ndarray, reference, on_phase) -> np.ndarray:
    """A classical fill of the whole scene; the one-date fills (each fills a band on its own) band by band, so
    that on_phase can say which band is being filled and only one band's zero-filled copy is made at a time."""
    if method in NEEDS_REFERENCE:  # the two-date fills may use every band at once
        if on_phase:
            on_phase(f"{method}: every band at once", 0, 0)
        given = np.where(context, bands, 0).astype(np.float32)
        return baselines.TWO_DATE_METHODS[method](given, context, np.asarray(reference))
    filled = np.empty(bands.shape, np.float32)
    for b in range(len(bands)):
        if on_phase:
            on_phase(f"{method}: band {b + 1} of {len(bands)}", b, len(bands))
        given = np.where(context[b], bands[b], 0).astype(np.float32)
        filled[b] = baselines.METHODS[method](given[None], context[b:b + 1])[0]
    return filled


def _phase(on_phase, text: str):
    """A progress(done, total) callback that tells on_phase `text` ('…: {done} of {total} tiles') filled in; None
    without on_phase."""
    if on_phase is None:
        return None
    return lambda done, total: on_phase(text.format(done=done, total=total), done, total)


def _every(*callbacks):
    """One progress(done, total) callback calling each of `callbacks` that is given; None when none is."""
    given = [callback for callback in callbacks if callback]
    if not given:
        return None

    def report(done, total):
        for callback in given:
            callback(done, total)

    return report


def _to_host(tensors, out, r0: int) -> list[np.ndarray]:
    """Rows of the result as numpy arrays; with `out`, copied straight into it band by band (a band's rows are
    contiguous there), so no other copy of them is made and the result's memory is touched once."""
    import torch

    if out is None:
        return [t.cpu().numpy() for t in tensors]
    rows = slice(r0, r0 + tensors[0].shape[1])
    for target, tensor in zip(out, tensors):
        for b, band in enumerate(tensor):
            torch.from_numpy(target[b, rows]).copy_(band)
    return [target[:, rows] for target in out]
