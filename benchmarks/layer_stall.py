"""How long napari's GUI thread stalls when a streamed whole-scene result becomes a layer, and when the user zooms
in and changes band: the result as the widget showed it before (a dask array read back from its tiled GeoTIFF)
against a multiscale layer (that file and a preview of every 4th row and column in memory, as `_layers.levels`
makes it). A 10 ms QTimer heartbeat; the longest gap between its ticks around each step.

    bash scripts/with_display.sh .venv/bin/python benchmarks/layer_stall.py   → prints JSON (and writes it with --out)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HEIGHT, WIDTH, BANDS = 7000, 8000, 6
STEP = 4  # the preview of a 7000×8000 scene (`_run.preview_step`)


def result_file(path: Path) -> Path:
    """A 7000×8000×6 float32 result as the widget streams it (TiffStream: 256² deflate tiles), made once."""
    from napari_convnp.tiffwrite import TiffStream

    if not path.exists():
        stream = TiffStream(path, (BANDS, HEIGHT, WIDTH), np.float32)
        x = np.arange(WIDTH)[None]
        for r0 in range(0, HEIGHT, 500):
            y = np.arange(r0, min(HEIGHT, r0 + 500))[:, None]
            stream.write(np.stack([(1000 + 300 * np.sin(x / 40 + b) * np.cos(y / 55 - b)).astype(np.float32)
                                   for b in range(BANDS)]))
        stream.close()
        stream.commit()
    return path


def measure(path: Path, multiscale: bool) -> dict:
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_convnp._napari import lazy_image

    viewer = napari.Viewer(show=True)
    viewer.add_image(np.zeros((BANDS, 100, 100), np.float32), name="warm")  # napari's imports done, as in the widget
    app = QApplication.instance()
    lazy = lazy_image(path)
    preview = np.stack([np.asarray(lazy[b, ::STEP, ::STEP]) for b in range(BANDS)])
    ticks = []
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    heartbeat.start(10)

    def step(what, action):
        for _ in range(50):  # settle: the heartbeat running, the previous step drawn
            app.processEvents()
            time.sleep(0.01)
        start = time.perf_counter()
        action()
        done = time.perf_counter()
        while time.perf_counter() < done + 1.0:  # the draws the step asked for
            app.processEvents()
            time.sleep(0.005)
        times = np.array([start, *(t for t in ticks if t > start), time.perf_counter()])
        return what, round(float(np.diff(times).max()), 3)

    data = [lazy, preview] if multiscale else lazy
    steps = [step("add the mean", lambda: viewer.add_image(data, multiscale=multiscale, name="mean",
                                                           contrast_limits=(700, 1300))),
             step("add the variance", lambda: viewer.add_image(data, multiscale=multiscale, name="variance",
                                                               contrast_limits=(700, 1300)))]
    viewer.reset_view()
    steps.append(step("zoom in ×8", lambda: setattr(viewer.camera, "zoom", viewer.camera.zoom * 8)))
    steps.append(step("another band", lambda: viewer.dims.set_current_step(0, 3)))
    viewer.close()
    return {"layers": "multiscale (file + preview)" if multiscale else "dask array of the file",
            "longest stall s": dict(steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=Path("/tmp/layer_stall/mean.tif"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.file.parent.mkdir(parents=True, exist_ok=True)
    path = result_file(args.file)
    from stack_memory import cpu_name  # the benchmarks' one way of naming the CPU (and its AVX-512 BF16)

    result = {"scene": f"{HEIGHT}×{WIDTH}×{BANDS} float32, streamed to a tiled deflate GeoTIFF", "cpu": cpu_name(),
              "runs": [measure(path, False), measure(path, True)]}
    print(json.dumps(result, indent=1, ensure_ascii=False))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
