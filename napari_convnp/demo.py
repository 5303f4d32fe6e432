"""Launch napari with the gap-filling widget docked and a real sample scene open.

python -m napari_convnp.demo [--sample sf_bay|itaipu|slc_off | --file SCENE] [--reference OTHER_DATE]
                             [--steps detect,simulate,run,grid] [--methods convnp,biharmonic] [--density 100]
                             [--screenshot out.png [--canvas-only] [--size 1500x950]]
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", default="slc_off", choices=["sf_bay", "itaipu", "slc_off"],
                        help="sample scene to open (default: %(default)s)")
    parser.add_argument("--file", help="open this GeoTIFF or Landsat product folder instead of a sample")
    parser.add_argument("--reference", metavar="SCENE", help="also open this other date of the same place and "
                                                              "choose it as the reference")
    parser.add_argument("--steps", default="",
                        help="comma-separated widget steps to run in order: detect, simulate, run, grid")
    parser.add_argument("--methods", default="convnp", help="comma-separated methods for the run step "
                                                            "(default: %(default)s)")
    parser.add_argument("--density", type=int, default=100, help="context density in %% for the run step")
    parser.add_argument("--screenshot", metavar="PATH",
                        help="save a screenshot of the whole window here and quit (works without a display, "
                             "under Xvfb)")
    parser.add_argument("--canvas-only", action="store_true", help="the screenshot shows only the canvas")
    parser.add_argument("--size", default="1500x950", help="window size for the screenshot (default: %(default)s)")
    args = parser.parse_args(argv)

    import napari

    from ._layers import show_scale_bar

    viewer = napari.Viewer(title="napari-convnp")
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    if args.file:
        widget.load(args.file)
        _wait(widget)  # a whole scene is read in a thread worker
    else:
        viewer.open_sample("napari-convnp", args.sample)
        show_scale_bar(viewer)
    bands = [layer for layer in viewer.layers if not layer.rgb]
    if args.reference:
        widget.load(args.reference)
        _wait(widget)
        widget.reference_combo.value = widget.image_combo.value
    if bands:  # else the file could not be read: the notification says why
        widget.image_combo.value = bands[0]
    for step in filter(None, args.steps.split(",")):
        if step == "detect":
            widget.detect()
            _wait(widget)
        elif step == "simulate":
            widget.simulate()
        elif step == "grid":
            widget.grid_button.setChecked(True)  # the widget hides masks and composites and labels the cells
        elif step == "run":
            for method, box in widget.method_boxes.items():
                box.setChecked(method in args.methods.split(","))
            widget.density.setValue(args.density)
            widget.run()
            _wait(widget)
        else:
            parser.error(f"unknown step '{step}': use detect, simulate, run, grid")
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        width, height = (int(v) for v in args.size.split("x"))
        viewer.window._qt_window.resize(width, height)
        for _ in range(20):
            QApplication.processEvents()
        viewer.reset_view()
        for _ in range(5):
            QApplication.processEvents()
        viewer.window.screenshot(args.screenshot, canvas_only=args.canvas_only)
        print(f"saved a screenshot of the viewer to {args.screenshot}", file=sys.stderr)
        viewer.close()
        return
    napari.run()


def _wait(widget):
    """Process Qt events until the widget's thread worker (a fill, reading or detecting) has finished."""
    import time

    from qtpy.QtWidgets import QApplication

    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
