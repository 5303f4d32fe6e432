"""RSS of one `fill-stack` target filled in this process (no Dask) by phase: what a target's memory is spent on
(issue 28). The stack is `stack_memory.py`'s (made here if missing); the first date is filled from its K = 3
references, ranked as the command ranks them, as a worker fills it.

    python benchmarks/stack_phases.py 4096 [6]  → prints the peak RSS (GB) and the seconds (sampled every 20 ms, so
                                                  about) of each phase, in the order they came
"""
from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import stack_memory  # noqa: E402 - the same stack
from run_stall import rss_gb  # noqa: E402 - the same sampling

from napari_convnp import fileio, stack_files, stack_fill  # noqa: E402
from napari_convnp.batch import plan_outputs  # noqa: E402
from napari_convnp.fusion import MAX_REFERENCES, rank_references  # noqa: E402

DATES = 10


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    bands = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = Path(f"/tmp/stack_phases/{size}" + (f"x{bands}" if bands != 3 else ""))
    files, _ = stack_memory.make_stack(ROOT.parent / "shared" / "data", work, size, DATES, bands)
    phase, peaks, seconds = ["start"], {}, {}

    def watch():
        while True:
            now = phase[0]
            peaks[now] = max(peaks.get(now, 0.0), rss_gb())
            seconds[now] = seconds.get(now, 0.0) + 0.02
            time.sleep(0.02)

    def named(module, name):
        real = getattr(module, name)

        def call(*args, **kwargs):
            phase[0] = name
            try:
                return real(*args, **kwargs)
            finally:
                phase[0] = f"after {name}"
        setattr(module, name, call)

    for module, name in ((stack_files, "read_date"), (fileio, "output_plan"), (fileio, "check_variance_range"),
                         (stack_fill, "target_holes"), (stack_fill, "rank_references"),
                         (stack_fill, "fuse_references")):
        named(module, name)
    real_fill = stack_fill.fill

    def fill(*args, **kwargs):
        kwargs["on_phase"] = lambda text, done, total: phase.__setitem__(0, "fill: " + text.split(":")[0])
        try:
            return real_fill(*args, **kwargs)
        finally:
            phase[0] = "after fill"
    stack_fill.fill = fill
    threading.Thread(target=watch, daemon=True).start()

    out_dir = work / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    options = stack_files.checked_fill_options({"precision": "bfloat16", "device": "cpu"}, "convnp", True, "phases")
    stack = stack_files._as_stack([str(f) for f in files], out_dir, None, None, None, 0, False)
    references = rank_references(stack.usable, stack.dates, 0, MAX_REFERENCES, bands=stack.samples, sampled=True)
    stack.usable.clear()
    stack.samples.clear()
    phase[0] = "ranked (what the command holds)"
    plan = plan_outputs(stack.paths, out_dir, "convnp", True, True)
    settings = {"fill_clouds": False, "method": "convnp", "options": options, "sources": stack.sources,
                "read": stack.read, "provenance": {"qa": None, "qa_band": None, "dilate": 0, "max_references": 3}}
    start = time.time()
    done = stack_files._fill_date(plan[stack.paths[0]], 2, settings, stack.item(0),
                                  *(stack.item(i) for i in references))
    phase[0] = "end"
    time.sleep(0.1)
    print(json.dumps({"size": size, "dates": DATES, "bands": bands, "seconds": round(time.time() - start, 1),
                      "peak_rss_gb_by_phase": {k: round(v, 3) for k, v in peaks.items()},
                      "seconds_by_phase": {k: round(v, 1) for k, v in seconds.items()},
                      "error": done.get("error")}, indent=1))


if __name__ == "__main__":
    main()
