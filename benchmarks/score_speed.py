"""How long the widget's scores take on a streamed (whole-scene) result: `metrics.scores` on a mean and a variance
read back from their tiled deflate GeoTIFFs (as `_napari.lazy_image` gives them), a synthetic 4096²×6 float32 scene
with simulated SLC-off stripes as the gaps; each score alone, then all of them together as the widget asks.

    .venv/bin/python benchmarks/score_speed.py [SIDE]   → prints JSON
"""
from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_convnp import masks, metrics
from napari_convnp._napari import lazy_image
from napari_convnp.tiffwrite import TiffStream


def main() -> None:
    side, bands = int(sys.argv[1]) if len(sys.argv) > 1 else 4096, 6
    y, x = np.ogrid[0:side, 0:side]
    truth = np.stack([(1000 + 300 * np.sin(x / 40 + b) * np.cos(y / 55 - b)).astype(np.float32) for b in range(bands)])
    noisy = truth + np.random.default_rng(0).normal(0, 20, truth.shape).astype(np.float32)
    folder = Path(tempfile.mkdtemp())
    files = {}
    for kind, data in (("mean", noisy), ("variance", np.full(truth.shape, 400, np.float32))):
        stream = TiffStream(folder / f"{kind}.tif", truth.shape, np.float32)
        for r0 in range(0, side, 512):
            stream.write(data[:, r0:r0 + 512])
        stream.close()
        stream.commit()
        files[kind] = lazy_image(folder / f"{kind}.tif")
    del noisy
    mean, variance = files["mean"], files["variance"]
    gaps = np.broadcast_to(masks.simulate_slc_off((side, side), seed=0, pixel_size=30), truth.shape)
    seconds = {}
    for name, run in (("read the mean once", lambda: [np.asarray(mean[b]) for b in range(bands)]),
                      ("rmse", lambda: metrics.rmse(mean, truth, gaps)),
                      ("ssim", lambda: metrics.ssim(mean, truth, gaps, 1000.0)),
                      ("nll", lambda: metrics.gaussian_nll(mean, variance, truth, gaps)),
                      ("coverage95", lambda: metrics.coverage95(mean, variance, truth, gaps)),
                      ("scores (all, as the widget)", lambda: metrics.scores(mean, truth, gaps, 1000.0, variance))):
        start = time.perf_counter()
        run()
        seconds[name] = round(time.perf_counter() - start, 2)
    print(json.dumps({"scene": f"{side}²×{bands} float32, mean and variance read back from files",
                      "machine": platform.processor() or platform.machine(), "seconds": seconds}, indent=1,
                     ensure_ascii=False))


if __name__ == "__main__":
    main()
