"""A screenshot of the widget mid-run: a mask of the valid pixels chosen with *invert (0 = fill)* ticked, the
ConvNP's named phase in the status line and in napari's activity dock (issue 25, items 2 and 6).

    bash scripts/with_display.sh .venv/bin/python benchmarks/phase_screenshot.py [--out x.png] [--phase calibrating]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="phases.png")
    parser.add_argument("--phase", default="calibrating", help="the screenshot is taken once the status starts so")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_convnp._layers import show_scale_bar

    viewer = napari.Viewer(title="napari-convnp")
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    viewer.open_sample("napari-convnp", "slc_off")
    show_scale_bar(viewer)
    widget.image_combo.value = next(layer for layer in viewer.layers if not layer.rgb)
    gaps = widget.detect()
    valid = viewer.add_labels((np.asarray(gaps.data) == 0).astype(np.uint8), name="valid pixels", opacity=0.4,
                              scale=gaps.scale, translate=gaps.translate)  # as a QA band marks them: 1 = valid
    viewer.layers.remove(gaps)
    widget.mask_combo.value = valid
    widget.invert_mask.setChecked(True)
    for method, box in widget.method_boxes.items():
        box.setChecked(method in ("convnp", "biharmonic"))
    viewer.window._qt_window.resize(1500, 950)
    viewer.window._status_bar._toggle_activity_dock(True)
    widget.run()
    while widget.worker is not None and not widget.status.text().startswith(args.phase):
        QApplication.processEvents()
        time.sleep(0.01)
    for _ in range(10):
        QApplication.processEvents()
    viewer.window.screenshot(args.out)
    print(f"saved {args.out} at: {widget.status.text()}")
    widget.cancel()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.close()


if __name__ == "__main__":
    main()
