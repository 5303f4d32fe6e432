"""What a user waits for: `napari-convnp fill` from process start to file written, and its peak memory, for the
ConvNP beside biharmonic on the same file, each in a fresh process; optionally the same commands run from an
older checkout in the same session (the machine's speed drifts between sessions, so only same-run numbers
compare). Issue 13's cases: 1024²×6 (ConvNP bfloat16 and float32, biharmonic), 4096²×6 and a full 7000×8000×6
scene (ConvNP bfloat16 with --variance); 4096² with smaller tiles (`4096-small-tiles`: less memory, more time);
and issue 9's: 1024²×6 with and without a reference (`1024+reference`).

The input: the Itaipu sample's 3 bands twice (the second copy ×1.1), tiled to the size, `simulate_slc_off(seed=0,
pixel_size=30)` with the gap pixels set to 0, deflate-compressed uint16, and a uint8 mask passed with --mask.
At 1024² and on the full scene also the ConvNP without the biharmonic blend (`--biharmonic-weight 0`), the fastest
way to run it.

python benchmarks/end_to_end.py [--cases 1024,1024+reference,4096,full] [--repeats 2] [--before /tmp/base]
  [--work /tmp/e2e] [--device cpu|cuda] [--json benchmarks/end_to_end_<device>.json] → prints a Markdown table
  and writes the JSON
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

from streaming import ROOT, make_input, run_cli

SIZES = {"1024": 1024, "1024+reference": 1024, "4096": 4096, "4096-small-tiles": 4096, "full": (7000, 8000)}
RUNS = {  # per case: (label, options, with --variance)
    "1024": [("convnp bfloat16", ("--precision", "bfloat16"), False),
             ("convnp bfloat16 --biharmonic-weight 0", ("--precision", "bfloat16", "--biharmonic-weight", "0"), False),
             ("convnp float32", ("--precision", "float32"), False),
             ("biharmonic", ("--method", "biharmonic"), False)],
    "1024+reference": [("convnp bfloat16", ("--precision", "bfloat16"), False),
                       ("convnp bfloat16 --reference", ("--precision", "bfloat16", "--reference", "{reference}"),
                        False)],
    "4096": [("convnp bfloat16 --variance", ("--precision", "bfloat16"), True)],
    "4096-small-tiles": [(f"convnp bfloat16 --variance --tile {t}", ("--precision", "bfloat16", "--tile", str(t)), True)
                         for t in (384, 256)],
    "full": [("convnp bfloat16 --variance", ("--precision", "bfloat16"), True),
             ("convnp bfloat16 --variance --biharmonic-weight 0",
              ("--precision", "bfloat16", "--biharmonic-weight", "0"), True)],
}
BEFORE_UP_TO = ("1024", "4096")  # the older code's full scene needs 5 GB and many minutes: left out
NEW_OPTIONS = ("--biharmonic-weight",)  # not run on the older code, which lacks them


def make_reference(scene: Path) -> Path:
    """Another "date" of the scene for the reference case: its values ×0.9 + 50 with no gaps (filled by the
    harmonic fill), on the same grid."""
    import numpy as np
    import tifffile

    from napari_convnp.baselines import METHODS
    from napari_convnp.scene import read_raw, read_scene

    path = scene.with_name(scene.stem + "_reference.tif")
    if not path.exists():
        raw = read_raw(read_scene(scene)).astype(np.float32)
        known = raw > 0
        filled = METHODS["harmonic"](np.where(known, raw, 0), known)
        data = np.clip(np.rint(filled * 0.9 + 50), 1, 65535).astype(np.uint16)
        with tifffile.TiffFile(scene) as tif:
            geo = [(t.code, t.dtype, t.count, t.value, True) for t in tif.pages[0].tags.values()
                   if t.code in (33550, 33922, 34735)]
        tifffile.imwrite(path, data, photometric="minisblack", planarconfig="separate", compression="zlib",
                         extratags=geo, metadata=None)
    return path


def cpu_name() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="1024,1024+reference,4096,full")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each 1024² command, interleaved")
    parser.add_argument("--before", type=Path, help="a checkout of older code, run the same way")
    parser.add_argument("--work", type=Path, default=Path("/tmp/e2e"))
    parser.add_argument("--json", type=Path, help="where to write the results (default: "
                        "benchmarks/end_to_end_<device>.json)")
    parser.add_argument("--device", default="cpu", help="where the ConvNP runs: cpu or cuda")
    args = parser.parse_args()
    args.json = args.json or ROOT / "benchmarks" / f"end_to_end_{args.device.split(':')[0]}.json"
    args.work.mkdir(parents=True, exist_ok=True)
    codes = [("after", None)] + ([("before", args.before.resolve())] if args.before else [])
    rows = []
    for case in args.cases.split(","):
        scene, mask = make_input(SIZES[case], args.work)
        reference = make_reference(scene) if "reference" in case else None
        repeats = args.repeats if case.startswith("1024") else 1
        for repeat in range(repeats):
            for label, options, variance in RUNS[case]:
                for code, path in codes:
                    if code == "before" and case not in BEFORE_UP_TO:
                        continue
                    if code == "before" and ("reference" in case or any(o in options for o in NEW_OPTIONS)):
                        continue
                    options = tuple(o.format(reference=reference) for o in options)
                    run = run_cli(f"{case}_{code}", path, scene, mask, args.work, options, variance, args.device)
                    for key in ("out", "variance"):
                        Path(run.pop(key)).unlink(missing_ok=True)
                    Path(args.work / f"{case}_{code}_out_filled_mask.tif").unlink(missing_ok=True)
                    rows.append({"case": case, "run": label, "code": code, "repeat": repeat, **run})
                    print(json.dumps(rows[-1]), flush=True)
    summary = []
    for key in dict.fromkeys((r["case"], r["run"], r["code"]) for r in rows):
        same = [r for r in rows if (r["case"], r["run"], r["code"]) == key]
        summary.append({"case": key[0], "run": key[1], "code": key[2], "runs": len(same),
                        "wall_seconds": statistics.median(r["wall_seconds"] for r in same),
                        "fill_seconds": statistics.median(r["fill_seconds"] for r in same),
                        "peak_rss_gb": max(r["peak_rss_gb"] for r in same)})
    result = {"measured": "napari-convnp fill, process start to file written (/usr/bin/time: wall, maximum "
                          "resident set size); fill_seconds: the fill call alone, from the command's summary; "
                          "medians over interleaved repeats",
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                          "device": args.device, "gpu": gpu_name() if args.device.startswith("cuda") else None},
              "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip(),
              "summary": summary, "runs": rows}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| scene (6 bands) | command | code | end to end s | fill call s | peak RSS GB |")
    print("|---|---|---|---|---|---|")
    for s in summary:
        size = "7000×8000" if s["case"] == "full" else f"{s['case'].split('+')[0].split('-')[0]}²"
        print(f"| {size} | {s['run']} | {s['code']} | {s['wall_seconds']:.1f} | {s['fill_seconds']:.1f} | "
              f"{s['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
    main()
