"""Many scenes on a Dask cluster: restartable, one failed scene never stops the others."""
from __future__ import annotations

import glob
import os
from pathlib import Path

from .scene import TIFF_SUFFIXES, SceneError


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their .tif files, or the folder itself when it is a Landsat product) and globs."""
    from .scene import BAND_FILE

    paths: list[Path] = []
    for item in inputs:
        matches = sorted(glob.glob(item)) or [item]
        for m in map(Path, matches):
            if m.is_dir() and any(BAND_FILE.search(f.name) for f in m.iterdir()):
                paths.append(m)  # a Landsat product folder is one scene
            elif m.is_dir():
                paths.extend(sorted(f for f in m.iterdir() if f.suffix.lower() in TIFF_SUFFIXES))
            else:
                paths.append(m)
    return list(dict.fromkeys(paths))


def output_paths(input: Path, out_dir: Path, method: str) -> tuple[Path, Path]:
    stem = input.stem if input.is_file() else input.name
    return out_dir / f"{stem}_{method}.tif", out_dir / f"{stem}_{method}_variance.tif"


def _fill_one(input: Path, out: Path, variance: Path | None, threads: int, kwargs: dict) -> dict:
    import torch

    from .cli import fill_file

    torch.set_num_threads(threads)
    return fill_file(input, out, variance=variance, **kwargs)


def fill_many(inputs: list[str], out_dir: Path, *, scheduler: str | None = None, workers: int = 2,
              variance: bool = False, method: str = "convnp", **fill_kwargs) -> dict:
    """Fill every input scene into `out_dir`; scenes whose outputs exist are skipped (outputs are
    written under a temporary name and renamed, so an existing file is a finished one)."""
    from dask.distributed import Client, LocalCluster, as_completed

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SceneError(f"{out_dir}: cannot create the output folder ({err.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise SceneError(f"{out_dir}: output folder is not writable")
    scenes = expand_inputs(inputs)
    if not scenes:
        raise SceneError(f"no input scenes found in {inputs}")
    report = {"done": [], "skipped": [], "failed": []}
    todo = []
    for scene in scenes:
        out, var = output_paths(scene, out_dir, method)
        if out.exists() and (not variance or var.exists()):
            report["skipped"].append(str(scene))
        else:
            todo.append((scene, out, var if variance else None))
    if not todo:
        return report
    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None)
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    with Client(scheduler or cluster) as client:
        futures = {client.submit(_fill_one, scene, out, var, threads, dict(method=method, **fill_kwargs),
                                 pure=False): scene for scene, out, var in todo}
        for future in as_completed(futures):
            scene = futures[future]
            try:
                report["done"].append(future.result())
            except Exception as err:  # noqa: BLE001 - a failed scene is reported, the rest go on
                report["failed"].append({"input": str(scene), "error": f"{type(err).__name__}: {err}"})
    if cluster is not None:
        cluster.close()
    return report
