"""Why the GUI froze while a worker ran Python code (issue 25): a change of the widget's status line (a layout
pass of napari's main window, 15 ms when nothing else runs) timed on the GUI thread while a worker thread runs
pure-Python loops or many small numpy operations, at Python's default GIL switch interval (5 ms) and at the 1 ms
a run now sets (`_run.BACKGROUND_SWITCH_INTERVAL`). Each call of the GUI thread into Python (napari's event filter,
widgets' size hints) waits for the GIL up to one interval.

    scripts/with_display.sh .venv/bin/python benchmarks/gil_convoy.py [python|numpy]
"""
from __future__ import annotations

import sys
import threading
import time

import numpy as np

TEXTS = ("short status", "16725854 pixels to fill; checking whether their values are known (to score the fills)")


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    kind = sys.argv[1] if len(sys.argv) > 1 else "python"
    viewer = napari.Viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-convnp", "Fill Landsat gaps")
    viewer.add_image(np.random.default_rng(0).random((3, 1024, 1024), dtype=np.float32))
    for _ in range(30):
        QApplication.processEvents()
        time.sleep(0.01)
    busy = [True]

    def worker():
        x = np.zeros(64, np.float32)
        while busy[0]:
            if kind == "python":
                total = 0
                for i in range(20000):
                    total += i
            else:
                for _ in range(200):
                    x = x + 1

    for interval in (0.005, 0.001, 0.005, 0.001):
        sys.setswitchinterval(interval)
        busy[0] = True
        thread = threading.Thread(target=worker)
        thread.start()
        seconds = []
        for rep in range(6):
            start = time.perf_counter()
            widget.status.setText(TEXTS[rep % 2])
            QApplication.processEvents()
            seconds.append(round(time.perf_counter() - start, 3))
            time.sleep(0.05)
        busy[0] = False
        thread.join()
        print(f"{kind} worker, switch interval {interval * 1000:.0f} ms: the status change's turn {seconds} s")
    viewer.close()


if __name__ == "__main__":
    main()
