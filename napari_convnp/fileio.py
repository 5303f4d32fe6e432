"""A file in, a filled file out: the one path shared by `napari-convnp fill`, `fill-many` and Python callers.

The order of the work is the promise: nothing is lost, and bad input costs no compute.

1. The options are checked, and every output path: its folder exists and takes a file (a probe file is
   made and removed), it is not a folder, not an input, not another output of the same run.
2. The scene is read (and the mask file); the outputs are checked again against every file the scene
   was read from (for a Landsat folder: each band file and the MTL).
3. The output pixel type and tags are settled: a known pixel that the type would change, a tag that
   cannot be written, a nodata value the type cannot hold: refused now, not after the fill.
4. The fill.
5. The outputs are written as tiled GeoTIFFs, each under a temporary name and renamed; the filled mean
   last, so that when it exists the run is complete. The mean and variance are streamed: the fill hands
   over bands of finished rows, which are written while the next are computed, so neither is ever in
   memory whole. A failed or interrupted run removes what it wrote.

Knows files, not napari; imports torch only through `inpaint` when the ConvNP runs.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import OptionError, SceneError
from .georef import GEO_TAGS as GRID_TAGS
from .maskfile import check_rule, describe_rule, mask_from_scene
from .masks import MaskError, detect_scene_gaps, validate_mask
from .options import DTYPES, FillOptions, check_callable, check_path, is_path, resolve_device
from .reference import grid_offset
from .scene import FILLED_MASK_SUFFIX, Scene, read_raw, read_scene
from .tiffread import read_provenance
from .tiffwrite import TiffStream, check_output_path, output_tags, same_file, write_stream
from .views import EXACT_IN_FLOAT32, FloatView

FILL_FILE_EXTRAS = ("adapt_steps", "biharmonic_weight", "model")  # what fill_file passes on to inpaint.fill
FILLED_MASK_OUTPUT = "filled pixels (1 = filled, 0 = kept or left nodata)"  # the sidecar's CONVNP_OUTPUT
FLOAT32_SAFE_SPREAD = 1e18  # known values spanning more: the variance (squared units) overflows float32
MOSTLY_FILLED = 0.5  # a mask marking more of the scene than this to fill may be the other way round: a note


@dataclass(frozen=True)
class Outputs:
    """The files one scene's fill writes."""

    out: Path
    variance: Path | None = None
    filled_mask: Path | None = None

    def paths(self) -> list[Path]:
        """In the order of writing: the filled mean last (when it exists, the others do)."""
        return [p for p in (self.filled_mask, self.variance, self.out) if p is not None]


def filled_mask_path(out: str | os.PathLike) -> Path:
    """The sidecar that says which pixels were filled: `<out stem>_filled_mask.tif` beside `out`."""
    out = Path(out)
    return out.with_name(f"{out.stem}{FILLED_MASK_SUFFIX}.tif")


def mask_sha256(gaps: np.ndarray) -> str:
    """A short hash of a filled-pixel mask (its shape and bits), carried by a fill and its sidecar alike:
    `scene.read_scene` tells a pair from two different runs by it."""
    digest = hashlib.sha256(str(gaps.shape).encode())
    for band in gaps:  # band by band: no packed copy of the whole
        digest.update(np.packbits(np.asarray(band, bool)).tobytes())
    return digest.hexdigest()[:16]


def is_filled_mask(path: str | os.PathLike) -> bool:
    """Whether a file is a filled-pixel mask this package wrote (by its provenance)."""
    return read_provenance(path).get("OUTPUT") == FILLED_MASK_OUTPUT


def load_mask(path: str | os.PathLike, scene: Scene, invert: bool = False, **rule) -> np.ndarray:
    """A mask file (nonzero = fill; with `invert`, 0 = fill; `rule`: values, bits or qa_kind as
    `maskfile.mask_from_scene` takes them) as C×H×W bool for `scene`."""
    return mask_of(read_scene(path), scene, invert, **rule)


def mask_of(mask_scene: Scene, scene: Scene, invert: bool = False, **rule) -> np.ndarray:
    """A mask read as a scene (nonzero = fill, or by `rule`; with `invert`, the other way round, as in masks that
    mark the valid pixels) as C×H×W bool for `scene`. NaN (nodata) is never to fill."""
    path = mask_scene.path
    mask = mask_from_scene(mask_scene, invert=invert, **rule)
    if mask.shape[1:] != scene.shape[1:]:
        raise MaskError(f"{path}: the mask is {mask.shape[1]}×{mask.shape[2]} pixels (rows×columns) but the scene "
                        f"is {scene.shape[1]}×{scene.shape[2]}")
    if all(mask_scene.geo_tags.get(tag) == scene.geo_tags.get(tag) for tag in GRID_TAGS):
        rows, cols = 0, 0  # the scene's own grid (a rotated one too, which grid_offset cannot place)
    else:
        rows, cols = _mask_offset(mask_scene, scene, path)
    if rows or cols:
        raise MaskError(f"{path}: the mask lies elsewhere than the scene (its first pixel is {rows} rows and {cols} "
                        "columns from the scene's, by their georeferencing); give a mask on the scene's grid")
    if len(mask) == 1:
        return np.broadcast_to(mask, scene.shape)
    if len(mask) != scene.shape[0]:
        raise MaskError(f"{path}: mask has {len(mask)} bands but the scene has {scene.shape[0]}")
    return mask


def _mask_offset(mask_scene: Scene, scene: Scene, path) -> tuple[int, int]:
    """Where the mask's first pixel lies on the scene's grid, by their georeferencing (where either has none, pixel
    for pixel)."""
    try:  # the same place too, not only the same size: a mask of elsewhere would fill the wrong pixels
        return grid_offset(scene, mask_scene)
    except ValueError as err:
        raise MaskError(f"{path}: the mask cannot be placed on the scene: {err}") from None


def scene_gaps(scene: Scene, all_nodata: bool = False) -> np.ndarray:
    """The gaps to fill when no mask is given: detected scan-line gaps and small holes (`all_nodata`: every
    nodata pixel, large areas and the off-scene border too)."""
    if all_nodata:
        if not scene.nodata.any():
            raise MaskError(f"{scene.path}: the scene has no nodata pixels to fill; pass --mask to say which to fill")
        return np.asarray(scene.nodata)
    gaps = detect_scene_gaps(scene)  # as the widget detects them
    if not gaps.any():
        raise MaskError(f"{scene.path}: no gaps detected; pass --mask to say which pixels to fill")
    return gaps


def output_dtype(option: str, source_dtype: str) -> np.dtype:
    """The pixel type of the filled output. auto: float32 where it holds every value of the source type
    exactly (8- and 16-bit integers, float16/32), else float64; source: the source's own type."""
    if option not in DTYPES:
        raise OptionError(f"dtype must be one of {', '.join(DTYPES)}, not '{option}'")
    source = np.dtype(source_dtype)
    if option == "source":
        return np.dtype(np.uint8) if source.kind == "b" else source
    if option == "auto":
        return np.dtype(np.float32) if source.str in EXACT_IN_FLOAT32 else np.dtype(np.float64)
    return np.dtype(option)


@functools.lru_cache(maxsize=1)
def weights_id() -> str:
    """The shipped ConvNP weights as provenance: file name and a short sha256 of its bytes."""
    from .model import WEIGHTS

    digest = hashlib.sha256(Path(WEIGHTS).read_bytes()).hexdigest()[:12]
    return f"{Path(WEIGHTS).name} sha256:{digest}"


def check_options(*, method: str, density, seed, tile, precision: str, dtype: str, device: str = "auto",
                  variance: bool = False, reference=None, biharmonic_weight=None, adapt_steps=0) -> FillOptions:
    """The validated `FillOptions`, or OptionError for a value that cannot work (a missing GPU too), before
    any file is read."""
    options = FillOptions(method=method, density=density, device=device, seed=seed, tile=tile, precision=precision,
                          dtype=dtype, references=tuple(reference or ()), adapt_steps=adapt_steps,
                          biharmonic_weight=biharmonic_weight, variance=bool(variance)).validate()
    if options.method == "convnp":
        resolve_device(options.device)
    return options


def _checked_arguments(input, out, mask, variance, reference, filled_mask, invert_mask, progress, cancelled,
                       fill_options):
    """fill_file's arguments checked for their type before any work (one line naming the argument); returns
    (input, out, mask, variance, references as a list of Paths): one reference path alone is one reference."""
    check_path(input, "input")
    check_path(out, "out")
    if variance is not None:
        check_path(variance, "variance")
    if mask is not None and not is_path(mask) and not isinstance(mask, (np.ndarray, list, tuple)):
        raise OptionError(f"mask must be a file name or an array (nonzero = fill), not {type(mask).__name__}")
    if not isinstance(filled_mask, bool) and not is_path(filled_mask):
        raise OptionError(f"filled_mask must be True, False or a file name, not {type(filled_mask).__name__}")
    if not isinstance(invert_mask, bool):
        raise OptionError(f"invert_mask must be True or False, not {type(invert_mask).__name__}")
    if invert_mask and mask is None:
        raise OptionError(f"{input}: --invert-mask turns a mask round, but no mask was given (without one the "
                          "detected gaps are filled)")
    check_callable(progress, "progress")
    check_callable(cancelled, "cancelled")
    unknown = sorted(set(fill_options) - set(FILL_FILE_EXTRAS))
    if unknown:
        raise OptionError(f"fill_file takes no option {unknown[0]!r} (besides its own: {', '.join(FILL_FILE_EXTRAS)})")
    references = [reference] if is_path(reference) else reference or []
    if not isinstance(references, (list, tuple)):
        raise OptionError(f"reference must be a file name or a list of them, not {type(reference).__name__}")
    for ref in references:
        check_path(ref, "each reference")
    return Path(input), Path(out), mask, variance, [Path(r) for r in references]


def check_distinct(outputs: Outputs) -> None:
    """Two outputs of one run must not be one file (the second would replace the first)."""
    paths = outputs.paths()
    for i, a in enumerate(paths):
        for b in paths[i + 1:]:
            if same_file(a, b):
                raise OptionError(f"{a}: two outputs of this run have this name ({_role(outputs, a)} and "
                                  f"{_role(outputs, b)}); give them different names")


def _role(outputs: Outputs, path: Path) -> str:
    if path is outputs.out:
        return "the filled scene"
    if path is outputs.variance:
        return "the variance"
    return "the filled-pixel mask"


def fill_file(input: str | os.PathLike, out: str | os.PathLike, *, mask: str | os.PathLike | np.ndarray | None = None,
              method: str = "convnp", density: float = 1.0, variance: str | os.PathLike | None = None,
              device: str = "auto", seed: int = 0, tile: int | None = None, precision: str = "float32",
              progress=None, dtype: str = "auto", filled_mask: bool | str | os.PathLike = True,
              reference: list[str | os.PathLike] | None = None, cancelled=None, invert_mask: bool = False,
              mask_values=None, mask_bits=None, mask_qa: str | None = None, fill_all_nodata: bool = False,
              on_note=None, **fill_options) -> dict:
    """Fill one scene file and write the result as GeoTIFF; returns a summary.

    out: the filled scene (known pixels exactly as in the input; see `output_dtype` for `dtype`).
    mask: a mask file, or an array (H×W or C×H×W), nonzero = fill (invert_mask: 0 = fill, for masks that mark
    the valid pixels); None: the detected gaps. A mask file may mark its pixels by `mask_values` (a list),
    `mask_bits` (bit numbers, any set) or `mask_qa` (the clouds and shadows of a 'qa_pixel', 'bqa' or 'fmask'
    band) instead. fill_all_nodata: fill every nodata pixel too, large areas included (the variance says how
    unsure). on_note: called with a one-line note before the fill where a mask file marks most of the scene, and
    after it with each of the fill's notes (a reference that predicts the scene poorly; also in the summary's notes).
    variance: the predictive variance (float32), ConvNP only. filled_mask: True writes
    `<out stem>_filled_mask.tif` (uint8 per band, 1 = filled), a path writes it there, False not at all.
    reference: other dates of the place (paths), passed to `inpaint.fill` as `reference=`;
    `fill_options` (adapt_steps, …) go to `inpaint.fill` unchanged. Every output records its provenance
    in GDAL_METADATA items (CONVNP_METHOD, CONVNP_WEIGHTS, CONVNP_DENSITY, …). cancelled: a callable; when
    it says True (before the fill, between tiles, before writing), `inpaint.Cancelled` is raised and
    nothing is written.
    """
    from .inpaint import CALIBRATION_KEYS, Cancelled, FillError, fill, run_precision

    def check_cancelled():
        if cancelled is not None and cancelled():
            raise Cancelled()

    input, out, mask, variance, references = _checked_arguments(input, out, mask, variance, reference, filled_mask,
                                                                invert_mask, progress, cancelled, fill_options)
    mask_array = None if mask is None or is_path(mask) else mask
    mask = Path(mask) if mask is not None and mask_array is None else None
    for path, role in [(input, "input"), (mask, "mask"), *((ref, "reference") for ref in references)]:
        if path is not None and not path.exists():  # before the output checks: a missing file is named as such
            raise SceneError(f"{path}: no such file or folder ({role})")
    sidecar = filled_mask_path(out) if filled_mask is True else Path(filled_mask) if filled_mask else None
    outputs = Outputs(out, Path(variance) if variance is not None else None, sidecar)
    check_distinct(outputs)
    inputs = [input, *([mask] if mask else []), *references]
    for path in reversed(outputs.paths()):  # the filled scene first: its name is the one the user gave
        check_output_path(path, inputs)
    if sidecar is not None and sidecar.exists() and not is_filled_mask(sidecar):
        raise SceneError(f"{sidecar}: it exists and is not a filled-pixel mask written by napari-convnp; refusing to "
                         "replace it (move it, or leave the mask out with --no-filled-mask)")
    stale = filled_mask_path(out)  # an earlier run's sidecar of OUT that this run would leave describing another
    stale = stale if stale != sidecar and is_filled_mask(stale) else None
    try:
        check_options(method=method, density=density, seed=seed, tile=tile, precision=precision, dtype=dtype,
                      device=device, variance=outputs.variance is not None, reference=references,
                      biharmonic_weight=fill_options.get("biharmonic_weight"),
                      adapt_steps=fill_options.get("adapt_steps", 0))
        check_rule(mask_values, mask_bits, mask_qa)
    except (OptionError, FillError) as err:
        raise OptionError(f"{input}: {err}") from None
    rule = {key: value for key, value in (("values", mask_values), ("bits", mask_bits), ("qa_kind", mask_qa))
            if value is not None}
    if rule and mask is None:
        raise OptionError(f"{input}: mask values, bits and qa say how to read a mask file; give the mask file too")
    reference_files = [f for ref in references if ref.is_dir() for f in ref.iterdir() if f.is_file()]
    for path in outputs.paths():  # a reference folder's band files are inputs too
        for src in reference_files:
            if same_file(path, src):
                raise SceneError(f"{path}: refusing to overwrite the input file {src}; choose another output name")

    scene = read_scene(input, lazy_float=True)  # 8/16-bit pixels stay as stored until a window is filled
    protect = list(scene.sources) + [input, *references, *reference_files]
    mask_scene = read_scene(mask, lazy_float=True) if mask is not None else None
    if mask_scene is not None:
        protect += [mask, *mask_scene.sources]
    for path in outputs.paths():
        for src in protect:
            if same_file(path, src):
                raise SceneError(f"{path}: refusing to overwrite the input file {src}; choose another output name")
    if mask_array is not None:
        try:
            gaps = validate_mask(np.asarray(mask_array) == 0 if invert_mask else mask_array, scene.shape)
        except MaskError as err:
            raise MaskError(f"{input}: {err}") from None
    elif mask_scene is not None:
        gaps = mask_of(mask_scene, scene, invert_mask, **rule)
        if not gaps.any():  # named against the mask file, not the scene
            raise MaskError(f"{mask}: the mask is empty: no pixel is marked to fill "
                            f"({describe_rule(**rule, invert=invert_mask)}; NaN = keep)")
        share = sum(int(band.sum()) for band in gaps) / gaps.size
        other_way = f"run again {'without' if invert_mask else 'with'} --invert-mask"
        if share == 1:  # one line: the problem and the likely way out
            raise MaskError(f"{input}: the mask covers every pixel: there are no known pixels left to fill from "
                            f"({mask.name}: {describe_rule(**rule, invert=invert_mask)}); if it marks the valid "
                            f"pixels, {other_way}")
        if share > MOSTLY_FILLED and on_note is not None:  # before the fill, not after it
            on_note(f"the mask marked {share:.0%} of the pixels to fill ({describe_rule(**rule, invert=invert_mask)}); "
                    f"if it marks the gaps the other way, {other_way}")
    else:
        gaps = scene_gaps(scene, all_nodata=fill_all_nodata)
    if fill_all_nodata and scene.nodata.any():
        gaps = np.logical_or(gaps, scene.nodata)
    del mask_scene
    plan = output_plan(scene, gaps, output_dtype(dtype, scene.source_dtype), input)
    if outputs.variance is not None:
        check_variance_range(scene, input)
    provenance = {
        "source": input.name, "method": method, "version": f"napari-convnp {__version__}",
        "weights": weights_id() if method == "convnp" and "model" not in fill_options else None,
        "density": f"{float(density):g}", "seed": int(seed),
        "precision": run_precision(device, precision)[0] if method == "convnp" else None,
        "mask": " and ".join(filter(None, (mask.name if mask is not None else None if fill_all_nodata
                                           else "detected gaps", "all nodata" if fill_all_nodata else None))),
        "references": ";".join(r.name for r in references) or None,
        "filled_pixels": int(gaps.sum()), "mask_sha256": mask_sha256(gaps),
        **{k: _plain(v) for k, v in fill_options.items() if k != "model"},
    }
    clip = plan["clip"]
    meta = {"out": {"output": "filled scene", **provenance,
                    "clipped": f"filled values clipped to the source's {scene.source_dtype} range [{clip[0]:g}, "
                               f"{clip[1]:g}]" if clip else None},
            "variance": {"output": "predictive variance (squared units of the scene)", **provenance},
            "filled_mask": {"output": FILLED_MASK_OUTPUT, **provenance}}
    names = {"out": scene.band_names, "variance": [f"{n} variance" for n in scene.band_names],
             "filled_mask": [f"{n} filled" for n in scene.band_names]}
    try:  # a tag that cannot be written: said now, not after the fill
        output_tags(scene, names["out"], plan["nodata_text"], meta["out"])
    except SceneError as err:
        raise SceneError(str(err) if str(err).startswith(str(input)) else f"{input}: {err}") from None

    check_cancelled()
    # nodata pixels in the gaps are filled (the mask wins), the others stay nodata; None: no C×H×W of False
    options = dict(method=method, density=float(density), nodata=scene.nodata if scene.nodata.any() else None,
                   device=device, seed=int(seed), tile=tile, precision=precision, progress=progress, **fill_options)
    if cancelled is not None:
        options["cancelled"] = cancelled
    if references:
        options["reference"] = [str(r) for r in references]
        options["scene"] = scene  # the references are aligned to it by georeferencing
    # The mean and variance are written as the fill hands over finished rows (tiled GeoTIFFs under
    # temporary names), so neither is ever in memory whole; the renames come at the end, the mean last.
    shape = scene.shape
    streams, written = {}, []
    try:
        if outputs.variance is not None:
            streams["variance"] = TiffStream(outputs.variance, shape, np.float32, like=scene,
                                             names=names["variance"], metadata=meta["variance"], protect=protect,
                                             keep_roles=())
        streams["out"] = TiffStream(outputs.out, shape, plan["dtype"], like=scene, names=names["out"],
                                    metadata=meta["out"], nodata_value=plan["nodata_value"], protect=protect)

        clipped = [0]

        def on_rows(r0, mean, var):
            rows = slice(r0, r0 + mean.shape[1])
            check_finite(mean, var, gaps[:, rows], input, method, outputs.variance is not None)
            clipped[0] += clip_fill(mean, clip)
            if "variance" in streams:
                streams["variance"].write(var)
            streams["out"].write(compose_output(scene, gaps, mean, plan, rows))

        try:
            with np.errstate(all="ignore"):  # overflow in a method is caught, as non-finite values
                result = fill(scene.bands, gaps, on_rows=on_rows, **options)
        except FillError as err:
            raise FillError(f"{input}: {err}") from None
        for note in result.notes if on_note is not None else ():
            on_note(f"{input}: {note}")
        for stream in streams.values():
            stream.close()
        check_cancelled()
        if outputs.filled_mask is not None:
            streams["filled_mask"] = write_stream(outputs.filled_mask, gaps, like=scene, names=names["filled_mask"],
                                                  metadata=meta["filled_mask"], protect=protect, keep_roles=())
        if stale is not None:  # before the new fill appears: never a fill beside another run's sidecar
            stale.unlink(missing_ok=True)
        for role in ("filled_mask", "variance", "out"):  # the filled mean last: when it exists, the others do
            if role in streams:
                written.append(streams[role].commit())
                del streams[role]  # after the commit: a signal during it still finds the stream to abort
    except BaseException:
        for stream in streams.values():
            stream.abort()
        for path in written:  # all or nothing: a run that did not finish leaves none
            path.unlink(missing_ok=True)
        raise
    return {"input": str(input), "out": str(out), "method": method, "device": result.device,
            "filled_pixels": int(np.logical_or.reduce(gaps, axis=0).sum()),  # pixels (any band), as the GUI counts
            "filled_values": (filled := int(gaps.sum())), "filled_share": round(filled / gaps.size, 4),
            "seconds": round(result.seconds, 2), "dtype": str(plan["dtype"]),
            "variance": str(outputs.variance) if outputs.variance else None,
            "filled_mask": str(outputs.filled_mask) if outputs.filled_mask else None,
            **({"clipped_pixels": clipped[0]} if clip else {}),
            **{key: round(value, 3) for key in CALIBRATION_KEYS if (value := getattr(result, key)) is not None},
            **fill_notes(result)}


def fill_notes(result) -> dict:
    """What a summary says of a Fill's reference and its notes (`inpaint.Fill.notes`), where it has them."""
    return {**({"reference_error": round(result.reference_error, 3)} if result.reference_error is not None else {}),
            **({"notes": list(result.notes)} if result.notes else {})}


def fill_to_files(bands, mask, folder: str | os.PathLike, *, like: Scene, name: str, on_rows=None, **options):
    """`inpaint.fill` with its mean and variance written into tiled float32 GeoTIFFs in `folder` (georeferenced
    like `like`) as the rows come, instead of held in memory: for results the size of a whole scene, which
    napari then shows read back window by window. Returns (Fill with mean and variance None, mean path,
    variance path or None); `on_rows` sees every band of rows as well. Filled values of an integer scene are
    clipped to its type's range, as `fill_file` does. Nothing is left behind on an error or a cancel."""
    from .inpaint import FillError, fill

    if tuple(np.shape(bands)) != tuple(like.shape):
        raise FillError(f"the bands are {'×'.join(map(str, np.shape(bands)))} but the scene they are written like "
                        f"is {'×'.join(map(str, like.shape))} (bands×rows×columns)")
    folder = Path(folder)
    stem = f"{re.sub(r'[^A-Za-z0-9.+-]+', '_', name)[:60]}-{os.getpid()}-{next(_streamed_runs)}"
    kinds = ("mean", "variance") if options.get("method", "convnp") == "convnp" else ("mean",)
    streams = {}
    try:
        for kind in kinds:
            streams[kind] = TiffStream(folder / f"{stem} {kind}.tif", like.shape, np.float32, like=like,
                                       names=[f"{n} {kind}" for n in like.band_names], keep_roles=(),
                                       protect=like.sources, metadata={"output": f"{name} {kind}"})

        clip = source_range(like.source_dtype)

        def write(r0, mean, variance):
            clip_fill(mean, clip)  # as in the file-to-file fill
            streams["mean"].write(mean)
            if "variance" in streams:
                streams["variance"].write(variance)
            if on_rows is not None:
                on_rows(r0, mean, variance)

        result = fill(bands, mask, on_rows=write, **options)
        paths = {}
        for kind, stream in streams.items():
            stream.close()
            paths[kind] = stream.commit()
    except BaseException:
        for stream in streams.values():
            stream.abort()
        raise
    return result, paths["mean"], paths.get("variance")


_streamed_runs = itertools.count()


def _plain(value):
    if isinstance(value, (list, tuple)):
        return ";".join(str(Path(v).name) if isinstance(v, (str, os.PathLike)) else str(v) for v in value)
    return value if isinstance(value, (str, int, float)) else str(value)


def output_plan(scene: Scene, gaps: np.ndarray, dtype: np.dtype, input: Path) -> dict:
    """How the filled scene is written: its type, where its known values come from, its nodata; raises
    SceneError now for what that type cannot hold (known pixels changed, a nodata value out of range)."""
    source = np.dtype(scene.source_dtype)
    raw = None
    if source.str not in EXACT_IN_FLOAT32:  # float32 bands rounded these values: take them as stored
        raw = read_raw(scene)
    if raw is not None and dtype != source:
        changed = _changed_count(raw, ~gaps & ~scene.nodata, dtype)
        if changed:
            count, before, after = changed
            hint = "use --dtype source" if dtype == np.float64 else "use --dtype float64 or source"
            raise SceneError(f"{input}: a {dtype} output would change {count} known pixels of this {source} scene "
                             f"(e.g. {before!r} would become {after!r}); {hint}")
    # pixels that stay nodata in the output, counted band by band (no scene-sized temporaries)
    left_nodata = sum(int((n & ~g).sum()) for n, g in zip(scene.nodata, gaps)) if scene.nodata.any() else 0
    nodata_value = None
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        value = scene.nodata_value
        if left_nodata:
            if value is None or not math.isfinite(value) or not value.is_integer() or not info.min <= value <= info.max:
                raise SceneError(f"{input}: {left_nodata} pixels stay nodata but the scene declares no "
                                 f"nodata value that {dtype} can hold; use --dtype float32 or float64 (NaN = nodata)")
        if value is not None and math.isfinite(value) and value.is_integer() and info.min <= value <= info.max:
            nodata_value = int(value)
    elif dtype == source and scene.nodata_value is not None and left_nodata and np.isfinite(scene.nodata_value):
        nodata_value = float(scene.nodata_value)  # --dtype source keeps a float scene's own nodata value
    nodata_text = None if nodata_value is None and dtype.kind in "ui" else (
        "nan" if nodata_value is None else str(nodata_value))
    return {"dtype": dtype, "raw": raw, "nodata_value": nodata_value, "nodata_text": nodata_text,
            "clip": source_range(source)}


def source_range(source_dtype) -> tuple[int, int] | None:
    """The range filled values of a scene of this pixel type are clipped to, whatever the output type (a uint8
    scene's fill never reads -15 or 278); None for float scenes."""
    source = np.dtype(source_dtype)
    if source.kind == "b":
        return 0, 1
    if source.kind in "ui":
        return int(np.iinfo(source).min), int(np.iinfo(source).max)
    return None


def clip_fill(mean: np.ndarray, clip) -> int:
    """Clip the fill's values (in place) to the source type's range; how many were beyond it. Known pixels lie
    within it already and NaN stays NaN."""
    if clip is None:
        return 0
    lo, hi = clip
    with np.errstate(invalid="ignore"):
        beyond = int(np.count_nonzero(mean < lo) + np.count_nonzero(mean > hi))
    if beyond:
        np.clip(mean, lo, hi, out=mean)
    return beyond


def _changed_count(raw: np.ndarray, known: np.ndarray, dtype: np.dtype):
    """(count, an example value, what it would become) of known pixels `dtype` cannot hold exactly, or None."""
    values = raw[known]
    with np.errstate(over="ignore", invalid="ignore"):
        converted = values.astype(dtype)
        if values.dtype.kind in "ui" and dtype.kind == "f":
            limit = float(np.iinfo(values.dtype).max) + 1
            fits = (converted < limit) & (converted >= float(np.iinfo(values.dtype).min))
            back = np.zeros_like(values)
            back[fits] = converted[fits].astype(values.dtype)
            same = fits & (back == values)
        else:
            same = converted.astype(values.dtype) == values
    bad = np.flatnonzero(~same)
    if not bad.size:
        return None
    return int(bad.size), values[bad[0]].item(), converted[bad[0]].item()


def check_variance_range(scene: Scene, input: Path) -> None:
    if isinstance(scene.bands, FloatView):  # 8- and 16-bit integers: never near the limit
        return
    spread = float(np.nanmax(scene.bands)) - float(np.nanmin(scene.bands))  # NaN = nodata; no copy
    if not spread < FLOAT32_SAFE_SPREAD:
        raise SceneError(f"{input}: its values span {spread:.3g}; a variance in these units (squared) would not fit "
                         "float32; rescale the scene or leave out --variance")


def check_finite(mean: np.ndarray, variance: np.ndarray | None, gaps: np.ndarray, input: Path, method: str,
                  with_variance: bool) -> None:
    """Never write a non-finite value into a filled pixel (float32 overflow on values near ±3e38); takes the
    whole result or a band of its rows (with the gaps of those rows)."""
    bad = sum(int((~np.isfinite(m[g])).sum()) for m, g in zip(mean, gaps))
    if with_variance and variance is not None:
        bad += sum(int((~np.isfinite(v[g])).sum()) for v, g in zip(variance, gaps))
    if bad:
        raise SceneError(f"{input}: the {method} fill gave {bad} non-finite values (the scene's values are too large "
                         "for float32 arithmetic); rescale the scene")


def compose_output(scene: Scene, gaps: np.ndarray, mean: np.ndarray, plan: dict,
             rows: slice = slice(None)) -> np.ndarray:
    """The filled scene in the output type: known pixels as stored, filled pixels from the fill (rounded and
    clipped for an integer type, never onto the nodata value), pixels left nodata as nodata. `mean` holds
    the scene's `rows` (all by default)."""
    dtype, raw, nodata_value = plan["dtype"], plan["raw"], plan["nodata_value"]
    if dtype == np.float32 and raw is None and nodata_value is None:
        return mean  # `fill` already keeps the (float32-exact) known values and NaN where nodata stays
    out = np.empty(mean.shape, dtype)
    for b in range(scene.shape[0]):
        gap, missing = gaps[b, rows], scene.nodata[b, rows]
        known = ~gap & ~missing
        leftover = missing & ~gap
        stored = raw[b, rows] if raw is not None else scene.bands[b, rows]
        if dtype.kind == "f":
            with np.errstate(over="ignore", invalid="ignore"):
                out[b] = stored
            out[b][gap] = mean[b][gap]
            out[b][leftover] = np.nan if nodata_value is None else nodata_value
        else:
            info = np.iinfo(dtype)
            out[b] = 0
            out[b][known] = stored[known]
            values = np.clip(np.rint(mean[b][gap].astype(np.float64)), info.min, info.max)
            if nodata_value is not None:  # a fill rounded onto the nodata value would read back as nodata
                on = values == nodata_value
                values[on] = nodata_value + 1 if nodata_value < info.max else nodata_value - 1
            out[b][gap] = values.astype(dtype)
            if nodata_value is not None:
                out[b][leftover] = nodata_value
    return out
