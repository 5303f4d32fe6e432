"""Peak memory and wall time of `napari-convnp fill` as a user runs it (process start to file written), with
the streamed writer, and what skipping tiles with nothing to fill saves (issue 13).

The input (the issue's case): the Itaipu sample's 3 bands twice (the second copy ×1.1), tiled to the size,
`simulate_slc_off(seed=0, pixel_size=30)` with the gap pixels set to 0, deflate-compressed uint16, and a uint8
mask passed with --mask; `--precision bfloat16 --variance`.

python benchmarks/streaming.py [--size 4096] [--before /tmp/base] [--skip-size 1024] [--work /tmp/streaming]
  --before: a checkout (say a clone of the previous commit) whose code is run the same way, for comparison
  → prints the numbers and writes benchmarks/streaming.json
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Runs the CLI from another checkout: the editable install of this one must not shadow it.
RUN_FROM = ("import runpy, sys; sys.meta_path = [f for f in sys.meta_path if '__editable__' not in "
            "getattr(f, '__module__', '')]; sys.path.insert(0, {path!r}); import napari_convnp; "
            "assert napari_convnp.__file__.startswith({path!r}); sys.argv = ['napari-convnp', *sys.argv[1:]]; "
            "runpy.run_module('napari_convnp.cli', run_name='__main__')")


def make_input(size: int | tuple[int, int], folder: Path, nodata: bool = False) -> tuple[Path, Path]:
    """The issue's input of size×size (or height×width) pixels, written into `folder` (kept when already there);
    nodata: the scene declares 0 as its nodata value (so that Detect gaps finds the stripes)."""
    import tifffile

    from napari_convnp import masks
    from napari_convnp.scene import read_raw, read_scene

    height, width = (size, size) if isinstance(size, int) else size
    name = f"{height}" if height == width else f"{height}x{width}"
    scene, mask = folder / f"scene_{name}{'_nodata' if nodata else ''}.tif", folder / f"mask_{name}.tif"
    if scene.exists() and mask.exists():
        return scene, mask
    folder.mkdir(parents=True, exist_ok=True)
    sample = read_raw(read_scene(ROOT / "napari_convnp" / "sample_data" / "itaipu_landsat8_B234_768.tif"))
    six = np.concatenate([sample, np.clip(np.rint(sample * 1.1), 0, 65535).astype(sample.dtype)])
    reps = (1, -(-height // six.shape[1]), -(-width // six.shape[2]))
    bands = np.tile(six, reps)[:, :height, :width].copy()
    gaps = masks.simulate_slc_off((height, width), seed=0, pixel_size=30)
    bands[:, gaps] = 0
    geo = [(33550, "d", 3, (30.0, 30.0, 0.0), True),
           (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), True),
           (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True)]
    tifffile.imwrite(scene, bands, photometric="minisblack", planarconfig="separate", compression="zlib",
                     extratags=geo + ([(42113, "s", 0, "0", True)] if nodata else []), metadata=None)
    tifffile.imwrite(mask, gaps.astype(np.uint8), photometric="minisblack", compression="zlib", extratags=geo,
                     metadata=None)
    return scene, mask


# Where GNU time is missing (the GPU machines): runs the command and reports as `/usr/bin/time -v` does.
TIME_V = ("import resource, subprocess, sys, time; t = time.perf_counter(); rc = subprocess.call(sys.argv[1:]); "
          "s = time.perf_counter() - t; kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
          "print(f'Maximum resident set size (kbytes): {kib}', file=sys.stderr); "
          "print(f'Elapsed (wall clock) time (h:mm:ss or m:ss): {int(s // 60)}:{s % 60:05.2f}', file=sys.stderr); "
          "sys.exit(rc)")


def run_cli(label: str, code_path: Path | None, scene: Path, mask: Path, folder: Path,
            options: tuple[str, ...] = ("--precision", "bfloat16"), variance: bool = True,
            device: str = "cpu") -> dict:
    """One `napari-convnp fill` in a fresh process under /usr/bin/time: wall seconds and peak RSS; the fill
    call alone as the command's summary reports it."""
    out, var = folder / f"{label}_out.tif", folder / f"{label}_var.tif"
    args = ["fill", str(scene), "--out", str(out), "--mask", str(mask), *options, "--device", device,
            *(["--variance", str(var)] if variance else [])]
    python = [sys.executable, "-c", RUN_FROM.format(path=str(code_path))] if code_path else \
        [sys.executable, "-m", "napari_convnp.cli"]
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else [sys.executable, "-c", TIME_V]
    done = subprocess.run([*timer, *python, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{label}: failed\n{done.stdout}\n{done.stderr}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", done.stderr).group(1)
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.split(":"))))
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"label": label, "code": str(code_path or ROOT), "wall_seconds": round(seconds, 1),
            "fill_seconds": summary["seconds"], "peak_rss_gib": round(peak_kib / 2 ** 20, 3),
            "peak_rss_gb": round(peak_kib * 1024 / 1e9, 3), "out": str(out), "variance": str(var)}


def skipping(size: int) -> list[dict]:
    """The fill call alone, with and without skipping tiles that hold no pixel to fill, on a painted-cloud
    mask and on SLC-off stripes (same input, in this process, model loaded before timing)."""
    from napari_convnp import inpaint, masks
    from napari_convnp.scene import read_scene

    sample = read_scene(ROOT / "napari_convnp" / "sample_data" / "itaipu_landsat8_B234_768.tif").bands
    six = np.concatenate([sample, sample * 1.1])
    bands = np.tile(six, (1, 2, 2))[:, :size, :size].copy()
    yy, xx = np.mgrid[:size, :size]
    clouds = np.zeros((size, size), bool)
    for cy, cx, r in ((0.25, 0.3, 0.08), (0.6, 0.7, 0.12), (0.8, 0.2, 0.05)):  # three painted clouds
        clouds |= (yy - cy * size) ** 2 + (xx - cx * size) ** 2 < (r * size) ** 2
    stripes = masks.simulate_slc_off((size, size), seed=0, pixel_size=30)
    model = inpaint._cached_model("cpu")
    real = inpaint.predict_rows
    calls = []

    class Counting:  # the shipped model, counting its calls (one per tile that runs the network)
        multiple, config = model.multiple, model.config

        def __call__(self, *args):
            calls.append(1)
            return model(*args)

    rows = []
    for name, mask in (("painted clouds", clouds), ("SLC-off stripes", stripes)):
        results = {}
        for skip in (False, True):
            calls.clear()
            inpaint.predict_rows = real if skip else (lambda *a: real(*a[:-1], None))
            start = time.perf_counter()
            results[skip] = inpaint.fill(bands, mask, device="cpu", precision="bfloat16", model=Counting())
            seconds = time.perf_counter() - start
            inpaint.predict_rows = real
            rows.append({"mask": name, "gap_fraction": round(float(mask.mean()), 4), "skip_empty_tiles": skip,
                         "network_calls": len(calls), "fill_seconds": round(seconds, 2)})
        same = np.array_equal(results[False].mean, results[True].mean, equal_nan=True) and \
            np.array_equal(results[False].variance, results[True].variance, equal_nan=True)
        rows[-1]["identical_to_no_skipping"] = bool(same)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--skip-size", type=int, default=1024, help="scene size for the skipping test (0: none)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/streaming_bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    scene, mask = make_input(args.size, args.work)
    runs = []
    if args.before:
        runs.append(run_cli("before", args.before.resolve(), scene, mask, args.work))
    runs.append(run_cli("after", None, scene, mask, args.work))
    for run in runs:
        print(json.dumps(run))
    result = {"case": f"napari-convnp fill of {args.size}x{args.size}x6 uint16 (Itaipu sample tiled, SLC-off "
                      "seed 0 set to 0, deflate), --mask uint8, --precision bfloat16 --variance, device cpu",
              "measured": "process start to file written (/usr/bin/time: wall, maximum resident set size)",
              "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
              "runs": runs}
    if args.before:
        from napari_convnp.scene import read_scene

        before, after = runs
        gaps = read_scene(mask).bands[0] != 0
        for key in ("out", "variance"):
            a, b = read_scene(before[key]).bands, read_scene(after[key]).bands
            result[f"max_abs_difference_{key}_in_gaps"] = float(np.abs(a - b)[:, gaps].max())
            del a, b
    if args.skip_size:
        result["skip_empty_tiles"] = skipping(args.skip_size)
        for row in result["skip_empty_tiles"]:
            print(json.dumps(row))
    (ROOT / "benchmarks" / "streaming.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
