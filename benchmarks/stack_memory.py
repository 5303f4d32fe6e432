"""Peak memory of `napari-convnp fill-stack` over the whole process tree (main process and Dask workers), and its
cost against one `fill --reference` per date (issue 28: memory bounded by what one target needs, not by N).

The stack: the Manaus scene of val/ (LC09 L2 SR, 851×468) mirrored to size×size, its first `bands` bands
(B2 B3 B4 with 3), one file per date (`YYYY-MM-DD_manaus.tif`, uint16, nodata 0, deflate), each date scaled by its
own gain and given its own `simulate_slc_off` stripes (seed = the date's index) set to 0.

python benchmarks/stack_memory.py memory --size 4096 --dates 10 --bands 3 --targets 1 [--before /tmp/base]
python benchmarks/stack_memory.py cost --size 1024 --dates 4 --bands 3 [--before /tmp/base]
  memory: one fill-stack run (--variance, bfloat16) that fills the first `targets` dates: peak RSS of the tree
  (the peak is per target: each target is one task); cost: fill-stack of every date, then `fill --reference` of
  one date from its nearest date, in the same run. --before: a checkout of the earlier code, run the same way
  (first; --only-before: alone).
  → prints the numbers and merges them into benchmarks/stack_memory.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from streaming import RUN_FROM  # noqa: E402 - the same way of running another checkout's CLI

SOURCE = Path("val") / "xlandsat__LC09_L2SP_231062_20230723_20230802_02_T1_stack.tif"
FIRST_DATE = datetime.date(2020, 1, 5)
DAYS_APART = 16  # one Landsat revisit
OPTIONS = ("--precision", "bfloat16", "--device", "cpu")
RESULTS = ROOT / "benchmarks" / "stack_memory.json"


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    name = names[0] if names else platform.processor() or platform.machine()
    return name + (" with AVX-512 BF16" if "avx512_bf16" in info else "")


def make_stack(data: Path, folder: Path, size: int, dates: int, bands: int) -> tuple[list[Path], list[Path]]:
    """The stack's files and each date's stripe mask (uint8, 1 = gap) in `folder` (kept when already there)."""
    import tifffile

    from napari_convnp import masks
    from napari_convnp.scene import read_raw, read_scene

    stack, gaps_dir = folder / "stack", folder / "gaps"
    days = [FIRST_DATE + datetime.timedelta(days=DAYS_APART * i) for i in range(dates)]
    files = [stack / f"{day.isoformat()}_manaus.tif" for day in days]
    mask_files = [gaps_dir / f"{day.isoformat()}_gaps.tif" for day in days]
    if all(f.exists() for f in files + mask_files):
        return files, mask_files
    stack.mkdir(parents=True, exist_ok=True)
    gaps_dir.mkdir(parents=True, exist_ok=True)
    raw = read_raw(read_scene(data / SOURCE))[:bands]
    mirrored = np.concatenate([raw, raw[:, ::-1]], 1)
    mirrored = np.concatenate([mirrored, mirrored[:, :, ::-1]], 2)  # seamless when tiled
    reps = (1, -(-size // mirrored.shape[1]), -(-size // mirrored.shape[2]))
    base = np.tile(mirrored, reps)[:, :size, :size].astype(np.float32)
    geo = [(33550, "d", 3, (30.0, 30.0, 0.0), True),
           (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 9990000.0, 0.0), True),
           (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32721), True),
           (42113, "s", 0, "0", True)]
    for i, (file, mask_file) in enumerate(zip(files, mask_files)):
        gain = 1 + 0.08 * np.sin(i)  # each date a little brighter or darker, band by band
        values = np.clip(np.rint(base * (gain + 0.02 * np.arange(bands))[:, None, None]), 1, 65535).astype(np.uint16)
        gaps = masks.simulate_slc_off((size, size), seed=i, pixel_size=30)
        values[:, gaps] = 0
        tifffile.imwrite(file, values, photometric="minisblack", planarconfig="separate", compression="zlib",
                         extratags=geo, metadata=None)
        tifffile.imwrite(mask_file, gaps.astype(np.uint8), photometric="minisblack", compression="zlib",
                         extratags=geo[:3], metadata=None)
    return files, mask_files


def run_sampled(args: list[str], code: Path | None, interval: float = 0.1) -> dict:
    """Runs the CLI in a fresh process and samples the RSS of its whole tree (Dask workers included) every
    `interval` seconds: wall seconds, the tree's peak, the main process's peak, the largest other process's peak."""
    import psutil

    python = [sys.executable, "-c", RUN_FROM.format(path=str(code))] if code else \
        [sys.executable, "-m", "napari_convnp.cli"]
    start = time.perf_counter()
    process = subprocess.Popen([*python, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT)
    peaks = {"tree": 0, "main": 0, "other": 0}
    done = threading.Event()

    def sample():
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                main = root.memory_info().rss
                others = []
                for child in root.children(recursive=True):
                    try:
                        others.append(child.memory_info().rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            peaks["tree"] = max(peaks["tree"], main + sum(others))
            peaks["main"] = max(peaks["main"], main)
            peaks["other"] = max([peaks["other"], *others])
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(args[:2])}: exit {process.returncode}\n{out[-2000:]}\n{err[-4000:]}")
    return {"wall_seconds": round(seconds, 1), "peak_rss_gb": round(peaks["tree"] / 1e9, 3),
            "peak_main_process_gb": round(peaks["main"] / 1e9, 3),
            "peak_largest_worker_gb": round(peaks["other"] / 1e9, 3), "report": json.loads(out)}


def memory_case(args, files, code: Path | None, label: str) -> dict:
    out_dir = args.work / f"out_{label}"
    subprocess.run(["rm", "-rf", str(out_dir)], check=True)
    targets = ",".join(f.name[:10] for f in files[:args.targets])
    run = run_sampled(["fill-stack", str(files[0].parent / "*.tif"), "--out-dir", str(out_dir), "--variance",
                       "--targets", targets, "--workers", str(args.workers), *OPTIONS], code)
    report = run.pop("report")
    return {"case": "memory", "code": label, "size": args.size, "dates": args.dates, "bands": args.bands,
            "targets_filled": len(report["done"]), "workers": args.workers, **run,
            "fill_seconds": [d["seconds"] for d in report["done"]], "out_dir": str(out_dir)}


def cost_case(args, files, mask_files, code: Path | None, label: str) -> dict:
    out_dir = args.work / f"cost_{label}"
    subprocess.run(["rm", "-rf", str(out_dir)], check=True)
    stack = run_sampled(["fill-stack", str(files[0].parent / "*.tif"), "--out-dir", str(out_dir / "stack"),
                         "--variance", "--workers", str(args.workers), *OPTIONS], code)
    out_dir.mkdir(parents=True, exist_ok=True)
    one = run_sampled(["fill", str(files[1]), "--out", str(out_dir / "one.tif"), "--variance",
                       str(out_dir / "one_var.tif"), "--mask", str(mask_files[1]), "--reference", str(files[0]),
                       *OPTIONS], code)
    n = len(stack.pop("report")["done"])
    one.pop("report")
    return {"case": "cost", "code": label, "size": args.size, "dates": args.dates, "bands": args.bands,
            "workers": args.workers, "fill_stack": stack, "fill_reference_one_date": one,
            "ratio_to_n_single_fills": round(stack["wall_seconds"] / (n * one["wall_seconds"]), 2),
            "target_ratio": 1.5, "out_dir": str(out_dir)}


def same_outputs(before: Path, after: Path) -> dict:
    """The two runs' outputs compared file by file: pixels, and provenance but for the version."""
    from napari_convnp.scene import read_scene
    from napari_convnp.tiffread import read_provenance

    files = sorted(before.glob("*.tif"))
    identical = provenance = 0
    for file in files:
        a, b = read_scene(file).bands, read_scene(after / file.name).bands
        identical += bool(np.array_equal(a, b, equal_nan=True))
        items = [{k: v for k, v in read_provenance(f).items() if k != "VERSION"} for f in (file, after / file.name)]
        provenance += items[0] == items[1]
    return {"files": len(files), "identical_pixels": identical, "identical_provenance": provenance}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=("memory", "cost"))
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--dates", type=int, default=10)
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--targets", type=int, default=1, help="memory: the dates filled (the first ones)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--before", type=Path, help="a checkout of the earlier code, run the same way")
    parser.add_argument("--only-before", action="store_true", help="run the --before checkout alone")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/stack_memory"))
    args = parser.parse_args()
    if not (args.data / SOURCE).exists():
        raise SystemExit(f"{args.data / SOURCE}: not found; give --data (the shared Landsat data)")
    args.work = args.work / f"{args.size}_{args.dates}x{args.bands}"
    files, mask_files = make_stack(args.data, args.work, args.size, args.dates, args.bands)
    runs = []
    codes = [("before", args.before.resolve())] if args.before else []
    codes += [] if args.only_before else [("after", None)]
    for label, code in codes:
        run = memory_case(args, files, code, label) if args.case == "memory" else \
            cost_case(args, files, mask_files, code, label)
        print(json.dumps(run), flush=True)
        runs.append(run)
    if args.case == "cost" and len(runs) == 2:
        runs[1]["outputs_against_before"] = same_outputs(Path(runs[0]["out_dir"]) / "stack",
                                                         Path(runs[1]["out_dir"]) / "stack")
        print(json.dumps(runs[1]["outputs_against_before"]))
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result.update({
        "measured": "napari-convnp from process start to exit; RSS of the whole process tree (the CLI and its Dask "
                    "workers) sampled with psutil every 0.1 s, summed; peaks of the sum, of the main process and "
                    "of the largest worker",
        "machine": {"cpu": cpu_name(), "cores": __import__("os").cpu_count(), "python": platform.python_version(),
                    "device": "cpu", "precision": "bfloat16", "load": "2 cores shared with other jobs "
                    "(load average 7-9): wall times are noisy, the cost ratio within a run is the result"},
        "input": f"{SOURCE.name} (val/) mirrored to size×size, first `bands` bands, one uint16 file per date "
                 f"{DAYS_APART} days apart from {FIRST_DATE}, per-date gain, SLC-off stripes seed = date index"})
    key = f"{args.case}_{args.size}_{args.dates}x{args.bands}"
    result.setdefault("runs", {}).setdefault(key, {}).update({run["code"]: run for run in runs})
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
