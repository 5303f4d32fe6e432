"""Launch napari with the gap-filling widget docked and a real sample scene open.

python -m napari_convnp.demo [--sample sf_bay|itaipu|slc_off | --file SCENE] [--steps detect,simulate,run,grid]
                             [--methods convnp,biharmonic] [--screenshot out.png [--canvas-only]]
"""
from __future__ import annotations

import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", default="slc_off", choices=["sf_bay", "itaipu", "slc_off"])
    parser.add_argument("--file", help="open this GeoTIFF or Landsat product folder instead of a sample")
    parser.add_argument("--steps", default="", help="comma-separated widget steps to run: detect, simulate, run, grid")
    parser.add_argument("--methods", default="convnp", help="comma-separated methods for the run step")
    parser.add_argument("--screenshot", help="save a screenshot of the whole window here and quit")
    parser.add_argument("--canvas-only", action="store_true", help="the screenshot shows only the canvas")
    args = parser.parse_args(argv)

    import napari

    viewer = napari.Viewer(title="napari-convnp")
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    if args.file:
        widget.load(args.file)
    else:
        viewer.open_sample("napari-convnp", args.sample)
    bands = [lay for lay in viewer.layers if not lay.rgb]
    if bands:  # else the file could not be read: the notification says why
        widget.image_combo.value = bands[0]
    for step in filter(None, args.steps.split(",")):
        if step == "detect":
            widget.detect()
        elif step == "simulate":
            widget.simulate()
        elif step == "grid":
            for layer in list(viewer.layers):  # the grid shows the bands and the results, not the helpers
                if getattr(layer, "rgb", False) or layer.name.endswith(("gaps", "SLC-off", "painted")):
                    viewer.layers.remove(layer)
                else:
                    layer.visible = True
            widget.grid_button.setChecked(True)
        elif step == "run":
            for method, box in widget.method_boxes.items():
                box.setChecked(method in args.methods.split(","))
            widget.run()
            _wait(widget)
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        viewer.window._qt_window.resize(1500, 950)
        for _ in range(20):
            QApplication.processEvents()
        viewer.window.screenshot(args.screenshot, canvas_only=args.canvas_only)
        viewer.close()
        return
    napari.run()


def _wait(widget):
    """Process Qt events until the widget's fill worker has finished."""
    import time

    from qtpy.QtWidgets import QApplication

    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
