"""A whole 7000×8000×6 scene in the napari widget, as a user works: Open file, Detect gaps, Run (ConvNP), with the
napari process's peak RSS and the longest stall of the GUI thread (the time between two turns of its event loop)
measured for each step, and a screenshot at the end. Issue 13's input (`streaming.make_input`), with 0 declared
as nodata so that detection finds the stripes.

scripts/with_display.sh .venv/bin/python benchmarks/whole_scene_napari.py [--size 7000x8000] [--work /tmp/e2e]
  [--json benchmarks/whole_scene_napari.json] [--screenshot docs/screenshots/whole_scene.png] [--in-memory]

--in-memory: the way before whole-scene streaming, for comparison: reading and detecting on the GUI thread, the
results held in memory (the widget's STREAM_RESULTS_VALUES raised past the scene's size).
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from streaming import ROOT, make_input


def rss_gb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="7000x8000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/e2e"))
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "whole_scene_napari.json")
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "screenshots" / "whole_scene.png")
    parser.add_argument("--in-memory", action="store_true", help="results in memory, reading and detecting on "
                        "the GUI thread (the way before), for comparison")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    args.work.mkdir(parents=True, exist_ok=True)
    scene, _ = make_input((height, width), args.work, nodata=True)

    peak = [0.0]

    def watch():
        while True:
            peak[0] = max(peak[0], rss_gb())
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_convnp import _run

    if args.in_memory:
        _run.STREAM_RESULTS_VALUES = 2 ** 62
    viewer = napari.Viewer(title="napari-convnp")
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    steps = {}

    def step(name, start):
        """Run the step, turn the event loop until the widget's worker ends; time, longest stall, memory."""
        t0 = last = time.time()
        start()
        stall = time.time() - t0  # the call itself runs on the GUI thread
        while widget.worker is not None:
            QApplication.processEvents()
            now = time.time()
            stall, last = max(stall, now - last), now
            time.sleep(0.02)
        QApplication.processEvents()
        steps[name] = {"seconds": round(time.time() - t0, 1), "longest_gui_stall_s": round(stall, 2),
                       "rss_gb": round(rss_gb(), 2), "peak_rss_gb_so_far": round(peak[0], 2)}
        print(name, steps[name], flush=True)

    step("open", lambda: widget.load(scene))
    step("detect", widget.detect)
    for method, box in widget.method_boxes.items():
        box.setChecked(method == "convnp")
    step("fill", widget.run)
    layers = {layer.name: type(layer.data).__module__.split(".")[0] for layer in viewer.layers}
    viewer.window._qt_window.resize(1500, 950)
    for _ in range(20):
        QApplication.processEvents()
    viewer.layers.selection.active = viewer.layers[-1]
    viewer.reset_view()
    for _ in range(5):
        QApplication.processEvents()
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    viewer.window.screenshot(str(args.screenshot))
    result = {"scene": f"{height}×{width}×6 uint16, nodata 0 (streaming.make_input)",
              "results": "in memory (--in-memory)" if args.in_memory else "streamed to files, read back lazily",
              "steps": steps,
              "status": widget.status.text(), "layers (data module)": layers, "peak_rss_gb": round(peak[0], 2)}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
