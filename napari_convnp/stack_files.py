"""`fill-stack` file to file: every date of a stack filled from the others into what `fill-many` writes per scene
(`NAME_<method>.tif`, `NAME_<method>_variance.tif`, the filled-pixel mask), on Dask, restartable.

Memory: this process reads each date once, one at a time (`stack.date_order`, `stack.read_date`: every date, its
quality band, its date and its grid checked before any work), and keeps of it only what ranking the references
needs (`fusion.rank_references`): its usable pixels (H×W) and the subsample of its bands the held-out fit looks at
(`fusion.fit_sample`). Each target date is then one Dask task that reads its own date and its K references from
the files, window by window as the fusion and the fill use them, and streams its outputs to disk as the rows come
(`stack_fill.fill_stack` with on_rows), so memory is bounded by what one target needs, not by the number of dates.
A Stack or Scenes given in memory are sent to the cluster instead (each date once).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .batch import (
    CONNECT_TIMEOUT_S,
    _close,
    _connect,
    _input_files,
    checked_fill_options,
    input_scenes,
    on_worker,
    plan_outputs,
    prepare_out_dir,
)
from .dates import parse_date
from .errors import OptionError, SceneError
from .fusion import MAX_REFERENCES, fit_sample, rank_references
from .options import NEEDS_REFERENCE, USES_REFERENCE, check_path, is_path, is_whole
from .stack import Stack, date_order, read_date, stack_of
from .stack_fill import FILLED, fill_stack, target_holes
from .tiffwrite import TiffStream, check_output_path, file_identity, remove_stale_partials, write_stream


def fill_stack_files(inputs, out_dir: str | os.PathLike, *, dates=None, qa: str | None = None,
                     qa_band: int | str | None = None, dilate: int = 0, max_references: int = MAX_REFERENCES,
                     fill_clouds: bool = False, variance: bool = False, filled_mask: bool = True,
                     scheduler: str | None = None, workers: int = 2, targets=None, method: str = "convnp",
                     connect_timeout: float = CONNECT_TIMEOUT_S, **fill_kwargs) -> dict:
    """Fill every date of a stack (or the dates in `targets`) from the others into `out_dir`, named as `fill_many`
    names its outputs; dates whose outputs all exist are skipped.

    inputs: files, folders or globs of one place (as `read_stack` takes them, with dates, qa, qa_band, dilate), a
    `Stack`, or a list of Scenes (dated by `dates` or their files). The holes are a date's nodata and stripes, and
    its clouds with fill_clouds (`stack_fill.fill_stack`); method: the ConvNP, or a single-image baseline that
    fills each date from its own pixels alone (no references).
    Returns {"done": [per date: its outputs, the references used (input, date, weight), the filled share, …],
    "skipped": [inputs], "failed": [{"input", "error"}]}; raises a ConvNPError before any work for bad input.
    """
    if method in NEEDS_REFERENCE:
        raise OptionError(f"method: {method} fills from one chosen date; fill-stack takes the ConvNP or a "
                          "single-image method, which it gives the fused references")
    options = checked_fill_options(fill_kwargs, method, variance, "fill_stack_files")
    if not is_whole(max_references) or max_references < 1:
        raise OptionError(f"max_references must be a whole number, 1 or more, not {max_references!r}")
    if scheduler is None and (not is_whole(workers) or workers < 1):
        raise OptionError(f"--workers must be 1 or more (a whole number), not {workers!r}")
    check_path(out_dir, "out_dir")
    out_dir = prepare_out_dir(out_dir)
    stack = _as_stack(inputs, out_dir, dates, qa, qa_band, dilate, bool(fill_clouds))
    chosen = _target_indices(stack, targets)
    plan = plan_outputs(stack.paths, out_dir, method, variance, filled_mask)
    sources = stack.sources
    taken = {file_identity(f) for f in sources}
    report: dict = {"done": [], "skipped": [], "failed": []}
    todo = []
    for t in chosen:
        outputs = plan[stack.paths[t]]
        for path in outputs.paths():  # any date's file, not only its own: never written
            check_output_path(path, sources)
            if file_identity(path) in taken:
                raise SceneError(f"{path}: it is an input of the stack; use another --out-dir")
        if outputs.out.exists() and (outputs.variance is None or outputs.variance.exists()):
            report["skipped"].append(str(stack.paths[t]))  # the mean is written last: it finished
        else:
            todo.append(t)
    if not todo:
        return report
    references = {}
    for t in todo:
        ranks = stack.has_holes[t] and method in USES_REFERENCE  # a single-image method fills each date alone
        references[t] = rank_references(stack.usable, stack.dates, t, int(max_references), bands=stack.samples,
                                        sampled=True) if ranks else []
    stack.usable.clear()  # ranked: what the ranking looked at is not held while the workers fill
    stack.samples.clear()
    settings = {"fill_clouds": bool(fill_clouds), "method": method, "options": options, "sources": sources,
                "read": stack.read,
                "provenance": {"qa": qa, "qa_band": _band_number(qa_band), "dilate": int(dilate),
                               "max_references": max_references}}
    workers = min(workers, len(todo))  # no idle worker holding memory; one date alone gets every core
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    client, cluster = _connect(scheduler, workers, connect_timeout)
    try:
        from dask.distributed import as_completed

        needed = sorted({i for t in todo for i in (t, *references[t])})
        sent = dict(zip(needed, client.scatter([stack.item(i) for i in needed])))
        futures = {client.submit(_fill_date, plan[stack.paths[t]], threads, settings, sent[t],
                                 *(sent[i] for i in references[t]), pure=False): t for t in todo}
        for future in as_completed(futures, loop=client.loop):
            t = futures[future]
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - the worker died (killed, out of memory)
                result = {"error": f"{stack.paths[t]}: its worker died ({type(err).__name__}: "
                                   f"{' '.join(str(err).split())})"}
            if "error" in result:
                report["failed"].append({"input": str(stack.paths[t]), "error": result["error"]})
            else:
                report["done"].append(result)
    finally:
        _close(client, cluster)
        for t in todo:  # a worker stopped mid-write leaves its temporary file unlocked
            for path in plan[stack.paths[t]].paths():
                remove_stale_partials(path)
    report["done"].sort(key=lambda summary: summary["date"])
    return report


@dataclass
class _Outline:
    """What this process holds of a stack: per date its path, date and the files it was read from, what ranking
    its references needs (usable: H×W; samples: its bands at `fusion.fit_sample`) and whether it has holes to fill;
    `read`: how a worker reads a date from its files (`stack.read_date`'s arguments), or None where the dates are
    in memory (`dates_in_memory`, a Stack, sent to the workers)."""

    paths: list[Path]
    dates: list
    sources: list[Path]
    usable: list[np.ndarray] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    has_holes: list[bool] = field(default_factory=list)
    read: dict | None = None
    dates_in_memory: Stack | None = None

    def add(self, scene, unusable: np.ndarray, cloudy: np.ndarray, fill_clouds: bool) -> None:
        """One date's ranking summary (its pixels decoded once, then let go)."""
        values = np.asarray(scene.bands, np.float32)
        rows, cols = fit_sample(values.shape[1:])
        self.usable.append(np.isfinite(values).all(0) & ~unusable)
        self.samples.append(values[:, rows, cols].copy())
        self.has_holes.append(bool(target_holes(values, unusable, cloudy, fill_clouds)[0].any()))
        self.sources.extend(scene.sources)

    def item(self, i: int) -> tuple:
        """Date i as a worker gets it: (path, date, scene, unusable, cloudy), the last three None to be read there."""
        if self.dates_in_memory is None:
            return self.paths[i], self.dates[i], None, None, None
        stack = self.dates_in_memory
        return stack.paths[i], stack.dates[i], stack.scenes[i], stack.unusable[i], stack.cloudy[i]


def _as_stack(inputs, out_dir: Path, dates, qa, qa_band, dilate, fill_clouds: bool) -> _Outline:
    """The stack outlined from what fill_stack_files takes: a Stack, Scenes, or paths (this package's outputs in
    out_dir left out, as fill-many leaves them), read one date at a time."""
    from .scene import Scene

    if isinstance(inputs, Stack):
        if dates is not None or qa is not None or qa_band is not None or dilate:
            raise OptionError("dates, qa, qa_band and dilate are for reading files; a Stack has them already")
        return _in_memory(inputs, fill_clouds)
    items = [inputs] if is_path(inputs) else inputs
    if not isinstance(items, (list, tuple)) or not items:
        raise OptionError(f"inputs must be files, folders or glob patterns, a Stack or a list of Scenes, not "
                          f"{type(inputs).__name__}")
    if any(isinstance(item, Scene) for item in items):
        if qa is not None or qa_band is not None:
            raise OptionError("qa and qa_band are for reading files; Scenes carry no quality band")
        return _in_memory(stack_of(items, dates=dates, dilate=dilate), fill_clouds)
    for item in items:
        check_path(item, "each input")
    scenes = input_scenes(items, out_dir)
    if not scenes:
        raise SceneError(f"no input scenes found in {' '.join(map(str, items))}")
    order, first = date_order(scenes, dates=dates, qa=qa, qa_band=qa_band)
    read = {"first": first, "qa": qa, "qa_band": qa_band, "dilate": dilate}
    outline = _Outline([path for _, path in order], [date for date, _ in order], [], read=read)
    for path in outline.paths:
        outline.sources.extend((path, *_input_files(path)))
        outline.add(*read_date(path, **read), fill_clouds)
    return outline


def _in_memory(stack: Stack, fill_clouds: bool) -> _Outline:
    outline = _Outline(stack.paths, stack.dates, [], dates_in_memory=stack)
    for path, scene, unusable, cloudy in zip(stack.paths, stack.scenes, stack.unusable, stack.cloudy):
        outline.sources.extend((path, *_input_files(path)))
        outline.add(scene, unusable, cloudy, fill_clouds)
    return outline


def _band_number(qa_band):
    """The quality band as provenance: counted from 1 as the command line counts it (-1 the last), or its name."""
    return qa_band + 1 if is_whole(qa_band) and qa_band >= 0 else qa_band


def _target_indices(stack: _Outline, targets) -> list[int]:
    """The stack's indices of the dates to fill: all, or those of `targets` (dates, or text separated by commas)."""
    if targets is None:
        return list(range(len(stack.dates)))
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    chosen = []
    for item in items:
        day = parse_date(item.strip() if isinstance(item, str) else item, "targets")
        if day not in stack.dates:
            raise OptionError(f"targets: {day.isoformat()} is no date of the stack (its dates: "
                              f"{', '.join(d.isoformat() for d in stack.dates)})")
        chosen.append(stack.dates.index(day))
    if not chosen:
        raise OptionError("targets: no date given")
    return sorted(set(chosen))


def _fill_date(outputs, threads: int, settings: dict, target: tuple, *references: tuple) -> dict:
    """Runs on a worker: one target filled from its references and written; a summary, or {"error": one line
    naming the file}; never raises."""
    return on_worker(target[0], threads, _fill_and_write, outputs, settings, target, references)


def _fill_and_write(outputs, settings: dict, target: tuple, references: tuple) -> dict:
    from .fileio import (
        FILLED_MASK_OUTPUT,
        check_finite,
        check_variance_range,
        clip_fill,
        compose_output,
        mask_sha256,
        output_dtype,
        output_plan,
        weights_id,
    )
    from .inpaint import CALIBRATION_KEYS, run_precision

    path, date, scene, unusable, cloudy = _pixels(target, settings["read"])
    references = [_pixels(r, settings["read"]) for r in references]
    method, options = settings["method"], dict(settings["options"])
    dtype = options.pop("dtype")
    holes, _ = target_holes(scene.bands, unusable, cloudy, settings["fill_clouds"])
    # what cannot be written: said first
    plan = output_plan(scene, holes, output_dtype(dtype, scene.source_dtype), path)
    if outputs.variance is not None:
        check_variance_range(scene, path)
    dates = [date, *(r[1] for r in references)]
    provenance = {
        "source": path.name, "method": method, "version": f"napari-convnp {__version__}",
        "weights": weights_id() if method == "convnp" and "model" not in options else None,
        "density": f"{float(options['density']):g}", "seed": int(options["seed"]),
        "precision": run_precision(options["device"], options["precision"])[0] if method == "convnp" else None,
        "mask": FILLED[settings["fill_clouds"]], "date": date.isoformat(), "references": "none",
        "filled_pixels": int(holes.sum()), "mask_sha256": mask_sha256(holes),
        **{k: v for k, v in settings["provenance"].items() if v is not None},
        **{k: options[k] for k in ("adapt_steps", "biharmonic_weight") if k in options},
    }
    names = scene.band_names
    protect = settings["sources"]
    clip = plan["clip"]
    streams, written, used, clipped = {}, [], [], [0]

    def on_rows(_, r0, mean, variance, picked):
        """Rows of the fill, written as they come (neither the mean nor the variance is ever in memory whole)."""
        if not streams:  # the first rows: the references and their weights are known, and so every tag
            used.extend({"input": references[i - 1][0].name, "date": dates[i].isoformat(), "weight": round(weight, 3)}
                        for i, weight in picked)
            provenance["references"] = "; ".join(f"{r['date']} {r['input']} weight {r['weight']:g}"
                                                 for r in used) or "none"
            if outputs.variance is not None:
                streams["variance"] = TiffStream(
                    outputs.variance, scene.shape, np.float32, like=scene, names=[f"{n} variance" for n in names],
                    keep_roles=(), protect=protect,
                    metadata={"output": "predictive variance (squared units of the scene)", **provenance})
            streams["out"] = TiffStream(
                outputs.out, scene.shape, plan["dtype"], like=scene, names=names, nodata_value=plan["nodata_value"],
                protect=protect, metadata={"output": "filled scene", **provenance,
                                           "clipped": f"filled values clipped to the source's {scene.source_dtype} "
                                                      f"range [{clip[0]:g}, {clip[1]:g}]" if clip else None})
        rows = slice(r0, r0 + mean.shape[1])
        check_finite(mean, variance, holes[:, rows], path, method, outputs.variance is not None)
        clipped[0] += clip_fill(mean, clip)
        if "variance" in streams:
            streams["variance"].write(variance)
        streams["out"].write(compose_output(scene, holes, mean, plan, rows))

    try:
        result = fill_stack([scene.bands, *(r[2].bands for r in references)],
                            [unusable, *(r[3] for r in references)], dates, targets=[0],
                            chosen=[range(1, len(references) + 1)],  # ranked by the command: not again, whole
                            max_references=max(1, len(references)), fill_clouds=settings["fill_clouds"],
                            cloudy=[cloudy, *(r[4] for r in references)], method=method, on_rows=on_rows,
                            **options)[0]
        for stream in streams.values():
            stream.close()
        if outputs.filled_mask is not None:
            streams["filled_mask"] = write_stream(
                outputs.filled_mask, holes, like=scene, names=[f"{n} filled" for n in names], keep_roles=(),
                metadata={"output": FILLED_MASK_OUTPUT, **provenance}, protect=protect)
        for role in ("filled_mask", "variance", "out"):  # the filled mean last: when it exists, the others do
            if role in streams:
                written.append(streams[role].commit())
                del streams[role]
    except BaseException:
        for stream in streams.values():
            stream.abort()
        for done in written:  # all or nothing
            done.unlink(missing_ok=True)
        raise
    fill = result.fill
    filled = int(holes.sum())
    return {"date": date.isoformat(), "input": str(path), "out": str(outputs.out), "method": method,
            "device": fill.device, "references": used, "filled": FILLED[settings["fill_clouds"]],
            "filled_pixels": int(holes.any(0).sum()), "filled_values": filled,
            "filled_share": round(filled / holes.size, 4), "seconds": round(fill.seconds, 2),
            "dtype": str(plan["dtype"]),
            "variance": str(outputs.variance) if outputs.variance else None,
            "filled_mask": str(outputs.filled_mask) if outputs.filled_mask else None,
            **({"clipped_pixels": clipped[0]} if plan["clip"] else {}),
            **{key: round(value, 3) for key in CALIBRATION_KEYS if (value := getattr(fill, key)) is not None}}


def _pixels(item: tuple, read: dict | None) -> tuple:
    """A date as (path, date, scene, unusable, cloudy): as sent, or read here from its files (`stack.read_date`),
    its pixels decoded window by window as they are used."""
    path, date, scene, _, _ = item
    return item if scene is not None else (path, date, *read_date(path, **read))
