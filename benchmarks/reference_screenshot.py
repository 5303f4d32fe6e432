"""The README's screenshot of the second date: the widget on a real pair (an STS-CNN patch with its real SLC-off mask
and its auxiliary date), the ConvNP mean and variance without and with the reference, side by side.

    bash scripts/with_display.sh .venv/bin/python benchmarks/reference_screenshot.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--patch", default="patch201")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots/5_reference.png"))
    args = parser.parse_args()
    sts = args.data / "benchmark" / "sts-cnn"
    if not sts.is_dir():
        print(f"{sts}: STS-CNN patches not found", file=sys.stderr)
        return 1

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_convnp.scene import read_scene

    viewer = napari.Viewer(title="napari-convnp")
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    widget.load(sts / f"{args.patch}_auxiliary.tif")
    widget.load(sts / f"{args.patch}_target.tif")
    target = viewer.layers[f"{args.patch}_target"]
    widget.image_combo.value = target
    gaps = read_scene(sts / "mask_slc1.tif").bands[0] == 0  # the paper's real SLC-off mask: 0 = gap
    layer, scene, source = widget._scene()
    widget._add_mask(np.broadcast_to(gaps, scene.shape), "real SLC-off gaps", layer, source, simulated=True)

    def run(*methods):
        for method, box in widget.method_boxes.items():
            box.setChecked(method in methods)
        widget.run()
        while widget.worker is not None:
            QApplication.processEvents()
            time.sleep(0.05)

    run("convnp", "biharmonic")
    widget.reference_combo.value = viewer.layers[f"{args.patch}_auxiliary"]
    run("convnp", "regression")
    shown = {f"{args.patch}_target", "convnp mean", "convnp+ref mean", "convnp variance", "convnp+ref variance"}
    for layer in viewer.layers:
        layer.visible = layer.name in shown
    widget.grid_button.setChecked(True)
    viewer.window._qt_window.resize(1500, 950)
    for _ in range(20):
        QApplication.processEvents()
    viewer.reset_view()
    for _ in range(5):
        QApplication.processEvents()
    viewer.window.screenshot(str(args.out), canvas_only=False)
    print(f"saved {args.out}", file=sys.stderr)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
