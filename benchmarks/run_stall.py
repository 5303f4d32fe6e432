"""The longest stall of napari's GUI thread (a 10 ms QTimer heartbeat: the longest gap between its ticks) and the
process's peak RSS (also by the phase the status line named) while the widget's Run fills a synthetic scene, from
the click to the last result layer and SETTLE_S seconds beyond (the canvas drawing it).

scripts/with_display.sh .venv/bin/python benchmarks/run_stall.py --size 2000x2000 --method idw [--cancel-after S]

--stream: results streamed to files, as for a whole scene. --cancel-after: press Cancel this many seconds after
Run (the start of a run on a scene too large to fill here in minutes: the clicking and the first phases are what
is measured). --fake-fill: the fill streams the scene itself back as its mean (and 1 as its variance) instead of
running a method: minutes of writing files, no network; what follows the fill (scores, layers, drawing) as in a
real run.
"""
from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np


def rss_gb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1e6
    return float("nan")


SETTLE_S = 3.0  # seconds the loop goes on after the run, with the heartbeat: the first draw of the results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2000x2000")
    parser.add_argument("--bands", type=int, default=6)
    parser.add_argument("--method", default="idw")
    parser.add_argument("--cancel-after", type=float, default=None)
    parser.add_argument("--fake-fill", action="store_true", help="the fill streams the scene back, no method run")
    parser.add_argument("--stream", action="store_true", help="stream the results to files as for a whole scene "
                        "(the widget's STREAM_RESULTS_VALUES set to 0), on a scene small enough to fill here")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_convnp import _run, masks
    from napari_convnp._napari import scene_layers
    from napari_convnp.scene import Scene

    if args.stream:
        _run.STREAM_RESULTS_VALUES = 0
    if args.fake_fill:
        from napari_convnp import inpaint

        def fake_fill(bands, mask, *, on_rows=None, **options):  # as `inpaint.fill` streams its rows
            if on_rows is None:
                mean = np.nan_to_num(np.asarray(bands, np.float32))
                return inpaint.Fill(mean, np.ones_like(mean), options.get("method", "convnp"), 1.0, "cpu", 0.0)
            for r0 in range(0, bands.shape[1], 512):
                rows = np.nan_to_num(np.asarray(bands[:, r0:r0 + 512], np.float32))
                on_rows(r0, rows, np.ones_like(rows))
            return inpaint.Fill(None, None, options.get("method", "convnp"), 1.0, "cpu", 0.0)

        inpaint.fill = fake_fill  # fill_to_files takes it from inpaint when it runs
    y, x = np.ogrid[0:height, 0:width]
    bands = np.empty((args.bands, height, width), np.float32)
    for b in range(args.bands):
        bands[b] = 1000 + 300 * np.sin(x / 40.0 + b) * np.cos(y / 55.0 - b)
    scene = Scene(bands, [f"B{b + 1}" for b in range(args.bands)], np.zeros(bands.shape, bool))
    stripes = masks.simulate_slc_off((height, width), seed=0, pixel_size=30)
    viewer = napari.Viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    for data, kwargs, _ in scene_layers(scene):
        viewer.add_image(data, **kwargs)
    widget.image_combo.value = viewer.layers[scene.name]
    widget._add_mask(np.broadcast_to(stripes, bands.shape), "gaps", viewer.layers[scene.name], scene)
    for method, box in widget.method_boxes.items():
        box.setChecked(method == args.method)
    for _ in range(10):
        QApplication.processEvents()
    baseline_gb = rss_gb()
    peak = [baseline_gb]
    ticks, phases = [], []
    by_phase = {}  # the peak RSS while the status line named each phase

    def watch():
        while True:
            rss = rss_gb()
            peak[0] = max(peak[0], rss)
            phase = phases[-1][1] if phases else "click"
            by_phase[phase] = max(by_phase.get(phase, 0.0), rss)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    widget.status.linkActivated  # noqa: B018 - the label exists
    heartbeat.start()
    start = time.perf_counter()
    widget.run_button.click()
    cancelled = False
    while widget.worker is not None:
        QApplication.processEvents()
        text = widget.status.text()
        if not phases or phases[-1][1] != text.split(":")[0]:
            phases.append((round(time.perf_counter() - start, 2), text.split(":")[0]))
        if args.cancel_after is not None and not cancelled and time.perf_counter() - start > args.cancel_after:
            widget.cancel_button.click()
            cancelled = True
        time.sleep(0.005)
    for _ in range(5):
        QApplication.processEvents()
    end = time.perf_counter()
    phases.append((round(end - start, 2), "after the run: the canvas drawing the new layers"))
    while time.perf_counter() < end + SETTLE_S:  # napari draws what was added on the next turns of its loop
        QApplication.processEvents()
        time.sleep(0.005)
    end = time.perf_counter()
    heartbeat.stop()
    times = np.array([start, *(t for t in ticks if t > start), end])
    gaps = np.diff(times)
    worst = [(round(float(times[i] - start), 2), round(float(gaps[i]), 3)) for i in np.argsort(gaps)[::-1][:3]]
    result = {"scene": f"{height}×{width}×{args.bands} float32 ({bands.nbytes / 1e9:.2f} GB)", "method": args.method,
              "fake fill": args.fake_fill,
              "cancelled after s": args.cancel_after, "streamed": _run.whole_scene(bands.size),
              "seconds": round(end - start, 1),
              "longest_gui_stall_s": round(float(gaps.max()), 3), "longest stalls (at s, s)": worst,
              "rss_before_run_gb": round(baseline_gb, 2), "peak_rss_gb": round(peak[0], 2),
              "peak_over_before_gb": round(peak[0] - baseline_gb, 2), "status": widget.status.text(),
              "peak_over_before_by_phase_gb": {k: round(v - baseline_gb, 2) for k, v in by_phase.items()},
              "phases seen": phases[:30]}
    print(json.dumps(result, indent=1, ensure_ascii=False))
    viewer.close()


if __name__ == "__main__":
    main()
