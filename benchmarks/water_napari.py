"""The widget's Water step in the GUI: the threshold slider timed end to end on a 2000² scene, and the screenshot of
docs/napari.md (a val/ Manaus crop, simulated SLC-off through the widget, the ConvNP and biharmonic water maps).

    bash scripts/with_display.sh .venv/bin/python benchmarks/water_napari.py --slider [--json FILE]
    bash scripts/with_display.sh .venv/bin/python benchmarks/water_napari.py --stall
    bash scripts/with_display.sh .venv/bin/python benchmarks/water_napari.py --screenshot docs/screenshots/7_water.png
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MANAUS = "val/xlandsat__LC09_L2SP_231062_20230723_20230802_02_T1_stack.tif"
OLI_SR = ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]


def _settle(app, seconds: float = 0.0):
    """Process Qt events (the canvas draws) for at least `seconds`."""
    end = time.perf_counter() + seconds
    app.processEvents()
    while time.perf_counter() < end:
        time.sleep(0.02)
        app.processEvents()


def _until_idle(app, panel):
    """Until the Water panel's workers (*Map water*'s, the area's) have ended and no area is due."""
    while panel.prepare_worker is not None or panel.area_worker is not None or panel._area_timer.isActive():
        _settle(app, 0.05)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{os.cpu_count()} cores"


def _synthetic_fills(size: int):
    """A viewer with the Water panel, on a size² scene of 6 C2 SR bands with full-scene SLC-off gaps; the fills'
    layers are made as a run makes them (no fill is run: the Water step's cost does not depend on the values)."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_convnp import masks
    from napari_convnp._layers import result_layer
    from napari_convnp._run import Job
    from napari_convnp.scene import Scene

    rng = np.random.default_rng(0)
    gaps = masks.simulate_slc_off((size, size), seed=1, crop_offset=(0, 0))
    mask = np.broadcast_to(gaps, (6, size, size))
    bands = rng.uniform(7273, 30000, (6, size, size)).astype(np.float32)
    scene = Scene(bands, OLI_SR, np.zeros(bands.shape, bool), source_dtype="uint16",
                  path=Path(f"LC09_L2SP_synthetic_{size}.tif"))
    viewer = napari.Viewer(title="napari-convnp")
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    job = Job("synthetic", scene, mask, ["convnp", "biharmonic"], 1.0, "cpu", None, mask_name="gaps")
    variance = np.where(mask, rng.uniform(0, 1e6, bands.shape), 0).astype(np.float32)
    for label, kind, data in (("convnp", "mean", bands), ("convnp", "variance", variance),
                              ("biharmonic", "mean", bands + rng.normal(0, 500, bands.shape).astype(np.float32))):
        result_layer(viewer, job, data, label, kind).visible = True  # as the widget shows them after a run
    return viewer, widget.water, QApplication.instance(), float(gaps.mean())


def _map_water_timed(panel, app) -> tuple[float, float]:
    """(seconds from *Map water* to its layers drawn, the longest gap between ticks of a 10 ms GUI timer then):
    the gap is how long the GUI froze."""
    from qtpy.QtCore import QTimer

    ticks = [time.perf_counter()]
    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    heartbeat.start()
    _settle(app, 0.1)
    tick = time.perf_counter()
    panel.map_water()
    while panel.step is None or panel.step.probability is None:
        _settle(app, 0.01)
    _settle(app)  # the canvas draws the new layers
    seconds = time.perf_counter() - tick
    heartbeat.stop()
    ticks.append(time.perf_counter())
    return seconds, max(np.diff([tick] + [t for t in ticks if t > tick]))  # from the press on


def slider(size: int, moves: int) -> dict:
    """Seconds from a slider move to its P layer and both water maps redrawn on the canvas (Qt's events processed,
    the canvas drawn), on a size² scene (`_synthetic_fills`). Moves follow each other as in a drag, so the area's
    worker does not start between them; P alone is timed apart. *Map water* is timed first, with the longest GUI
    stall while it prepares."""
    viewer, panel, app, filled_share = _synthetic_fills(size)
    first, stall = _map_water_timed(panel, app)
    panel.cancel()
    _until_idle(app, panel)
    seconds, p_alone = [], []
    for k in range(moves):
        tick = time.perf_counter()
        panel.threshold.setValue(-30 + 10 * k)
        app.processEvents()  # the canvas redraws the layers
        seconds.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        panel.step.p_at(0.05 + 0.1 * k)
        p_alone.append(time.perf_counter() - tick)
    panel.cancel_area()
    tick = time.perf_counter()
    panel.start_area()
    _until_idle(app, panel)
    area_seconds = time.perf_counter() - tick
    viewer.close()
    return {"size": size, "filled_share": round(filled_share, 3), "precision": "float32",
            "cpu": _cpu(), "load_average": [round(x, 1) for x in os.getloadavg()],
            "rendering": "Xvfb, Mesa software OpenGL", "map_water_seconds": round(first, 3),
            "map_water_longest_gui_stall_seconds": round(stall, 3),
            "slider_seconds": [round(s, 4) for s in seconds], "median_seconds": round(statistics.median(seconds), 4),
            "max_seconds": round(max(seconds), 4), "p_alone_median_seconds": round(statistics.median(p_alone), 4),
            "area_interval_seconds": round(area_seconds, 1)}


def map_water_stall(size: int) -> dict:
    """*Map water* alone (`_map_water_timed`): its seconds and the longest GUI stall, without the slider's minute."""
    viewer, panel, app, _ = _synthetic_fills(size)
    seconds, stall = _map_water_timed(panel, app)
    panel.cancel()
    _until_idle(app, panel)
    viewer.close()
    return {"size": size, "precision": "float32", "cpu": _cpu(), "load_average": [round(x, 1) for x in os.getloadavg()],
            "map_water_seconds": round(seconds, 3), "map_water_longest_gui_stall_seconds": round(stall, 3)}


def screenshot(data: Path, out: Path) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-convnp")
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    app = QApplication.instance()
    widget.load(data / MANAUS)
    widget.seed.setValue(2)
    widget.simulate()
    for method, box in widget.method_boxes.items():
        box.setChecked(method in ("convnp", "biharmonic"))
    widget.run()
    while widget.worker is not None:
        _settle(app, 0.05)
    panel = widget.water
    panel.map_water()
    _until_idle(app, panel)
    def show():  # the natural-colour composite, P(water) and the two water maps
        for layer in viewer.layers:
            kind = layer.metadata.get("napari_convnp_result", {}).get("kind")
            layer.visible = getattr(layer, "rgb", False) or kind in ("P(water)", "water")

    show()
    widget.grid_button.setChecked(True)
    show()  # Side by side hid the composite
    viewer.window._qt_window.resize(2000, 1250)
    _settle(app, 1.0)
    viewer.reset_view()
    _settle(app, 0.5)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.window.screenshot(str(out), canvas_only=False)
    print(f"saved {out}; {panel.area_label.text()}", file=sys.stderr)
    viewer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slider", action="store_true", help="time the threshold slider")
    parser.add_argument("--stall", action="store_true", help="time Map water alone and the GUI's longest stall")
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--moves", type=int, default=7)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "water_napari.json")
    parser.add_argument("--screenshot", type=Path, help="save the Water step's screenshot here")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    if args.slider:
        result = slider(args.size, args.moves)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result))
    if args.stall:
        print(json.dumps(map_water_stall(args.size)))
    if args.screenshot:
        if not (args.data / MANAUS).is_file():
            print(f"{args.data / MANAUS}: not found (--data)", file=sys.stderr)
            return 1
        screenshot(args.data, args.screenshot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
