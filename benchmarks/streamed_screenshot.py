"""A screenshot of a streamed (whole-scene) result in the widget, made small enough to fill here: the results
streamed to files as for a whole scene (`_run.STREAM_RESULTS_VALUES` 0) and shown as multiscale layers with a
preview of every 3rd row and column (`_run.PREVIEW_SIDE` 256 on a 768² scene), the filled mean's RGB composite
made on the way beside the scene's own, zoomed in so that napari reads full resolution from the files (issue 25,
items 5 and 6).

    bash scripts/with_display.sh .venv/bin/python benchmarks/streamed_screenshot.py [--out x.png]
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="streamed.png")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_convnp import _run
    from napari_convnp._layers import show_scale_bar
    from napari_convnp._napari import SAMPLE_DIR

    viewer = napari.Viewer(title="napari-convnp")
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    widget.load(SAMPLE_DIR / "itaipu_landsat8_B234_768.tif")
    show_scale_bar(viewer)
    widget.simulate()
    _run.STREAM_RESULTS_VALUES, _run.PREVIEW_SIDE = 0, 256  # after reading: a whole scene is read in a worker
    for method, box in widget.method_boxes.items():
        box.setChecked(method == "convnp")
    viewer.window._qt_window.resize(1500, 950)
    widget.run()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.02)
    for layer in viewer.layers:
        layer.visible = layer.name == "convnp RGB"
    rgb = viewer.layers["convnp RGB"]
    print("multiscale:", rgb.multiscale, [tuple(level.shape) for level in rgb.data])
    viewer.reset_view()
    viewer.camera.zoom *= 3  # zoomed in: the full-resolution level, read from the file
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    print("level shown:", rgb.data_level, "status:", widget.status.text())
    viewer.screenshot(args.out, canvas_only=False)
    print(f"wrote {args.out}")
    viewer.close()


if __name__ == "__main__":
    main()
