"""Speed and peak memory of the ConvNP fill beside the classical fills, on the same input.

Each case runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own.
The input is a real Landsat scene (the shipped Itaipu sample, 6 bands made from its 3 by mirroring
it) tiled up to the asked size, with simulated SLC-off stripes of a whole scene.

python benchmarks/speed.py [--sizes 512,1024,4096,full] [--baselines-up-to 1024] [--device cpu]
  → prints a Markdown table and writes benchmarks/speed_<device>.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"512": (512, 512), "1024": (1024, 1024), "4096": (4096, 4096), "full": (7000, 8000)}
BANDS = 6


def make_input(height, width):
    import numpy as np

    from napari_convnp import masks
    from napari_convnp._napari import SAMPLE_DIR
    from napari_convnp.scene import read_scene

    sample = read_scene(SAMPLE_DIR / "itaipu_landsat8_B234_768.tif").bands
    six = np.concatenate([sample, sample[:, ::-1]])[:BANDS]
    reps = (1, -(-height // six.shape[1]), -(-width // six.shape[2]))
    bands = np.tile(six, reps)[:, :height, :width].copy()
    stripes = masks.simulate_slc_off((height, width), crop_offset=(0, 0), seed=0)
    return bands, stripes


def run_case(size: str, method: str, device: str, precision: str, memory_fraction: str = "", profile: str = "") -> dict:
    """memory_fraction: cap the GPU memory torch may take (to see the fill retry on smaller tiles);
    profile: write where the fill call's time goes (cProfile, main thread) to this text file."""
    import cProfile
    import pstats
    import warnings

    import torch

    from napari_convnp.inpaint import fill

    height, width = SIZES[size]
    bands, stripes = make_input(height, width)
    if memory_fraction:
        torch.cuda.set_per_process_memory_fraction(float(memory_fraction))
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if profiler:
            profiler.enable()
        fill(bands, stripes, method=method, device=device, precision=precision)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if profiler:
            profiler.disable()
    seconds = time.perf_counter() - start
    if profiler:
        with open(profile, "w") as out:
            for order, count in (("cumulative", 45), ("tottime", 30)):
                pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(count)
    retries = [str(w.message) for w in caught if "out of memory" in str(w.message)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # GiB (ru_maxrss is KiB)
    gpu_peak = torch.cuda.max_memory_allocated() / 1024 ** 3 if device.startswith("cuda") else None
    megapixels = height * width / 1e6
    return {"size": size, "shape": [BANDS, height, width], "method": method, "device": device,
            "precision": precision, "seconds": seconds, "megapixels_per_second": megapixels / seconds,
            "peak_rss_gib": peak, "gpu_peak_gib": gpu_peak, "memory_fraction": float(memory_fraction or 1),
            "profiled": bool(profile),
            "out_of_memory_retries": retries}


def machine(device: str) -> dict:
    """What the numbers were measured on."""
    import os
    import platform

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512,1024,4096,full")
    parser.add_argument("--baselines", default="biharmonic,harmonic,telea,ns,idw,gauss")
    parser.add_argument("--baselines-up-to", default="1024", help="largest size the baselines run on")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="where to write the rows (default: benchmarks/speed_<device>.json)")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--memory-fraction", type=float,
                        help="also run the largest size in bfloat16 with the GPU capped at this share of its memory")
    parser.add_argument("--profile", type=Path,
                        help="also run the largest size in float32 under cProfile and write its statistics here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case.split(":"))))
        return
    sizes = args.sizes.split(",")
    cases = []
    for size in sizes:
        cases += [(size, "convnp", args.device, p) for p in args.precisions.split(",")]
        if sizes.index(size) <= sizes.index(args.baselines_up_to) if args.baselines_up_to in sizes else True:
            cases += [(size, m, "cpu", "float32") for m in args.baselines.split(",") if m]
    if args.memory_fraction:
        cases.append((sizes[-1], "convnp", args.device, "bfloat16", str(args.memory_fraction)))
    if args.profile:
        cases.append((sizes[-1], "convnp", args.device, "float32", "", str(args.profile.resolve())))
    rows = []
    for case in cases:
        proc = subprocess.run([sys.executable, __file__, "--case", ":".join(case)], capture_output=True, text=True)
        if proc.returncode:
            print(f"{case}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['size']:>5} {r['method']:>10} {r['precision']:>8} {r['seconds']:8.2f} s "
              f"{r['megapixels_per_second']:7.3f} Mpx/s  peak {r['peak_rss_gib']:.2f} GiB "
              f"GPU {r['gpu_peak_gib'] or 0:.2f} GiB  {'; '.join(r['out_of_memory_retries'])}", flush=True)
    out = args.json or Path(__file__).parent / f"speed_{args.device.split(':')[0]}.json"
    out.write_text(json.dumps({"machine": machine(args.device), "rows": rows}, indent=1))
    print("\n| size (6 bands) | method | precision | seconds | Mpx/s | × ConvNP time | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next((x for x in rows if x["size"] == r["size"] and x["method"] == "convnp"), r)
        print(f"| {r['shape'][1]}×{r['shape'][2]} | {r['method']} | {r['precision']} | {r['seconds']:.2f} | "
              f"{r['megapixels_per_second']:.3f} | {r['seconds'] / ref['seconds']:.2f} | {r['peak_rss_gib']:.2f} |")


if __name__ == "__main__":
    main()
