"""Many scenes on a Dask cluster: restartable, one failed scene never stops the others.

Each scene goes through `fileio.fill_file` on a worker; a scene's error comes back as a value (one
line naming the file), never as a worker-side exception, so nothing but the report reaches stderr.
"""
from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

from .errors import ConvNPError, SceneError
from .fileio import FILL_FILE_EXTRAS, OptionError, Outputs, filled_mask_path
from .options import check_callable, check_path, is_path
from .scene import expand_inputs  # noqa: F401 - fill-many's inputs, importable from here as before
from .system import allocator_for_arrays
from .tiffread import read_provenance
from .tiffwrite import check_output_path, file_identity, remove_stale_partials, same_file

CONNECT_TIMEOUT_S = 5  # how long to try a --scheduler address before saying it cannot be reached


def _stem(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def plan_outputs(scenes: list[Path], out_dir: Path, method: str, variance: bool = False,
                 filled_mask: bool = True) -> dict[Path, Outputs]:
    """`OUT_DIR/<name>_<method>.tif` (+ `_variance`, `_filled_mask`) for every scene, so that no two scenes
    share an output: where names clash (a/s.tif and b/s.tif, or S.tif and s.tif on a case-blind disk),
    the parent folders' names come first (a_s_convnp.tif, b_s_convnp.tif), then a number."""
    depth = {scene: 0 for scene in scenes}
    labels = {}
    while True:
        labels = {scene: _label(scene, depth[scene]) for scene in scenes}
        groups: dict[str, list[Path]] = {}
        for scene, label in labels.items():
            groups.setdefault(label.casefold(), []).append(scene)
        deeper = []
        for group in groups.values():  # a parent folder's name helps only where the parents differ
            parents = {os.path.normcase(os.path.dirname(os.path.abspath(s))) for s in group}
            if len(group) > 1 and len(parents) > 1:
                deeper += [s for s in group if depth[s] < len(Path(os.path.abspath(s)).parts) - 2]
        if not deeper:
            break
        for scene in deeper:
            depth[scene] += 1
    seen: dict[str, int] = {}
    plan = {}
    for scene in scenes:
        label = labels[scene]
        n = seen.get(label.casefold(), 0) + 1
        seen[label.casefold()] = n
        if n > 1:  # the same name in the same folder (s.tif and s.TIF): numbered in input order
            label = f"{label}_{n}"
        out = out_dir / f"{label}_{method}.tif"
        plan[scene] = Outputs(out, out_dir / f"{label}_{method}_variance.tif" if variance else None,
                              filled_mask_path(out) if filled_mask else None)
    return plan


def _label(scene: Path, depth: int) -> str:
    parents = Path(os.path.abspath(scene)).parent.parts[1:]
    return "_".join([*(parents[len(parents) - depth:] if depth else ()), _stem(scene)])


def _input_files(scene: Path) -> list[Path]:
    """The files a scene is read from, as far as can be told without reading it."""
    if scene.is_dir():
        try:
            return [f for f in scene.iterdir() if f.is_file()]
        except OSError:
            return [scene]
    return [scene]


def on_worker(input, threads: int, work, *args) -> dict:
    """A scene's (or date's) task on a worker, with its threads and glibc's allocator set for arrays: work(*args),
    or {"error": one line naming `input`}; never raises (a failed scene is reported, the rest go on)."""
    try:
        import torch

        torch.set_num_threads(threads)
        with allocator_for_arrays():
            return work(*args)
    except Exception as err:  # noqa: BLE001 - reported as a value
        return {"error": failure_text(err, input)}


def _fill_one(input: Path, outputs: Outputs, threads: int, kwargs: dict) -> dict:
    """Runs on a worker: a summary, or {"error": one line naming the file}; never raises."""
    return on_worker(input, threads, _fill_scene, input, outputs, kwargs)


def _fill_scene(input: Path, outputs: Outputs, kwargs: dict) -> dict:
    from .fileio import fill_file

    return fill_file(input, outputs.out, variance=outputs.variance, filled_mask=outputs.filled_mask or False,
                     **kwargs)


def failure_text(err: Exception, input) -> str:
    """A failed scene's error as one line naming the scene (a worker reports it; it never raises it)."""
    text = " ".join(str(err).split())
    if not isinstance(err, ConvNPError):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    if isinstance(err, MemoryError):
        text = "out of memory while filling it"
    if str(input) not in text:
        text = f"{input}: {text}"
    return text


def fill_many(inputs: list[str] | str | os.PathLike, out_dir: Path, *, scheduler: str | None = None, workers: int = 2,
              variance: bool = False, method: str = "convnp", filled_mask: bool = True,
              connect_timeout: float = CONNECT_TIMEOUT_S, progress=None, **fill_kwargs) -> dict:
    """Fill every input scene into `out_dir`; scenes whose outputs all exist are skipped (outputs are
    written under a temporary name and renamed, so an existing file is a finished one). progress: called as
    progress(scenes finished, scenes to fill) as each one ends, filled or failed. An input that does not exist (a
    glob pattern that matches nothing) is reported failed before any work: no cluster starts for none.

    Returns {"done": [summaries], "skipped": [inputs], "failed": [{"input", "error"}]}. Raises
    SceneError / OptionError before any work for a bad output folder, worker count or scheduler.
    """
    items = [inputs] if is_path(inputs) else inputs
    if not isinstance(items, (list, tuple)) or not items:
        raise OptionError(f"inputs must be a file, folder or glob pattern, or a list of them, not "
                          f"{type(inputs).__name__}")
    for item in items:
        check_path(item, "each input")
    check_path(out_dir, "out_dir")
    if scheduler is not None and not isinstance(scheduler, str):
        raise OptionError(f"scheduler must be a Dask scheduler's address (str) or None, not {type(scheduler).__name__}")
    if scheduler is None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise OptionError(f"--workers must be 1 or more (a whole number), not {workers!r}")
    check_callable(progress, "progress")
    checked_fill_options(fill_kwargs, method, variance, "fill_many")
    out_dir = prepare_out_dir(out_dir)
    scenes = input_scenes(inputs, out_dir)
    if not scenes:
        raise SceneError(f"no input scenes found in {inputs}")
    plan = plan_outputs(scenes, out_dir, method, variance, filled_mask)
    inputs_by_file = {}  # one identity per input file: the clash check stays linear in the number of scenes
    for scene in scenes:
        for f in _input_files(scene):
            inputs_by_file.setdefault(file_identity(f), f)
    report: dict = {"done": [], "skipped": [], "failed": []}
    todo = []
    for scene in scenes:
        outputs = plan[scene]
        clash = next(((p, inputs_by_file[file_identity(p)]) for p in outputs.paths()
                      if file_identity(p) in inputs_by_file), None)
        if not scene.exists():
            what = "no file matches this pattern" if glob.has_magic(str(scene)) else "no such file or folder"
            report["failed"].append({"input": str(scene), "error": f"{scene}: {what} (input)"})
        elif clash:
            report["failed"].append({"input": str(scene), "error": f"{scene}: its output {clash[0]} would replace "
                                     f"the input {clash[1]}; use another --out-dir"})
        elif outputs.out.exists() and (outputs.variance is None or outputs.variance.exists()):
            # the mean is written last, so it existing means the run finished (runs of older versions wrote no
            # filled-pixel mask: they are done too)
            report["skipped"].append(str(scene))
        else:
            todo.append((scene, outputs))
    if not todo:
        return report
    kwargs = dict(method=method, **fill_kwargs)
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    for _, outputs in todo:
        for path in outputs.paths():  # a name taken by a folder: said now, not per worker
            if path.is_dir():
                raise SceneError(f"{path}: the output is an existing folder; move it or use another --out-dir")
    client, cluster = _connect(scheduler, workers, connect_timeout)
    try:
        from dask.distributed import as_completed

        finished = 0

        futures = {client.submit(_fill_one, scene, outputs, threads, kwargs, pure=False): scene
                   for scene, outputs in todo}
        for future in as_completed(futures, loop=client.loop):
            scene = futures[future]
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - the worker died (killed, out of memory)
                result = {"error": f"{scene}: its worker died ({type(err).__name__}: {' '.join(str(err).split())})"}
            if "error" in result:
                report["failed"].append({"input": str(scene), "error": result["error"]})
            else:
                report["done"].append(result)
            if progress is not None:
                finished += 1
                progress(finished, len(todo))
    finally:
        _close(client, cluster)
        for _, outputs in todo:  # a worker stopped mid-write (Ctrl-C, killed) leaves its temporary file unlocked
            for path in outputs.paths():
                remove_stale_partials(path)
    return report


def checked_fill_options(fill_kwargs: dict, method: str, variance: bool, what: str) -> dict:
    """The fill options of a batch run (density, seed, tile, precision, dtype, device and `fill_file`'s extras),
    with their defaults, checked now, not on every worker after Dask has started."""
    from .fileio import check_options

    options = {"density": 1.0, "seed": 0, "tile": None, "precision": "float32", "dtype": "auto", "device": "auto"}
    unknown = sorted(set(fill_kwargs) - set(options) - set(FILL_FILE_EXTRAS))
    if unknown:
        raise OptionError(f"{what} takes no option {unknown[0]!r}")
    options.update((k, v) for k, v in fill_kwargs.items() if k in options)
    check_options(method=method, variance=variance, biharmonic_weight=fill_kwargs.get("biharmonic_weight"),
                  adapt_steps=fill_kwargs.get("adapt_steps", 0), **options)
    return {**options, **{k: v for k, v in fill_kwargs.items() if k not in options}}


def prepare_out_dir(out_dir) -> Path:
    """The output folder, made if missing; SceneError where it is a file or takes no files."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SceneError(f"{out_dir}: the output folder is a file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SceneError(f"{out_dir}: cannot create the output folder ({err.strerror})") from None
    check_output_path(out_dir / "probe.tif")  # the folder takes files: a probe file made and removed
    return out_dir


def input_scenes(inputs, out_dir: Path) -> list[Path]:
    """The scenes `inputs` expand to, but this package's own outputs in `out_dir` (an earlier run's, where it is
    the input folder too)."""
    return [s for s in expand_inputs(inputs) if not (same_file(s.parent, out_dir) and read_provenance(s).get("OUTPUT"))]


def _connect(scheduler: str | None, workers: int, timeout: float):
    from dask.distributed import Client, LocalCluster
    from distributed.comm.addressing import parse_address, parse_host_port

    for name in ("distributed", "tornado", "asyncio"):  # shutdown chatter, retries: the report says what counts
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if scheduler:
        try:
            scheme, location = parse_address(scheduler)
            if scheme != "inproc":
                parse_host_port(location)  # an address Client cannot parse leaves a Client that fails again at exit
            return Client(scheduler, timeout=timeout, set_as_default=False), None
        except (OSError, TimeoutError, ValueError, TypeError) as err:
            raise OptionError(f"{scheduler}: cannot reach the Dask scheduler "
                              f"({' '.join(str(err).split()) or type(err).__name__})") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.CRITICAL)
    try:
        return Client(cluster, set_as_default=False), cluster
    except BaseException:
        cluster.close()
        raise


def _close(client, cluster) -> None:
    try:
        client.close(timeout=10)
    finally:
        if cluster is not None:
            cluster.close(timeout=10)
