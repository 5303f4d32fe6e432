"""Test-time adaptation: gap PSNR of the ConvNP on the STS-CNN patches against adaptation steps and seconds.

    .venv/bin/python benchmarks/adaptation.py [--data ../shared/data] [--steps 0,30,60,120] [--patches 5]

Writes benchmarks/adaptation.json: per mask, patch and step count, PSNR / coverage / seconds, with and without
the auxiliary date as reference, so the default of `--adapt` is chosen from data.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_convnp import metrics
from napari_convnp.evaluate import sts_cnn_cases
from napari_convnp.inpaint import fill
from napari_convnp.scene import read_scene


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--steps", default="0,30,60,120")
    parser.add_argument("--patches", type=int, default=5)
    parser.add_argument("--masks", default="mask_slc1.tif,mask_slc2.tif")
    parser.add_argument("--reference", action="store_true", help="also with the auxiliary date as reference")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("adaptation.json"))
    args = parser.parse_args()
    folder = args.data / "benchmark" / "sts-cnn"
    if not folder.is_dir():
        print(f"{folder}: STS-CNN patches not found; nothing measured", file=sys.stderr)
        return 1
    steps = [int(s) for s in args.steps.split(",")]
    modes = [False, True] if args.reference else [False]
    rows = []
    for mask in args.masks.split(","):
        for i, (name, bands, gaps, data_range) in enumerate(sts_cnn_cases(folder, mask)):
            if i >= args.patches:
                break
            aux = read_scene(folder / name.replace("target", "auxiliary")).bands
            for with_reference in modes:
                for n in steps:
                    start = time.perf_counter()
                    result = fill(bands, gaps, adapt_steps=n, precision="bfloat16", device="cpu",
                                  reference=aux if with_reference else None)
                    seconds = time.perf_counter() - start
                    s = metrics.scores(result.mean, bands, gaps, data_range, result.variance)
                    rows.append({"mask": mask, "patch": name, "reference": with_reference, "steps": n,
                                 "psnr": s["psnr"], "coverage95": s["coverage95"], "nll": s["nll"],
                                 "seconds": seconds})
                    print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for mask in args.masks.split(","):
        for with_reference in modes:
            for n in steps:
                sel = [r for r in rows if r["mask"] == mask and r["steps"] == n and r["reference"] == with_reference]
                key = f"{mask} {'convnp + reference' if with_reference else 'convnp'} {n} steps"
                summary[key] = {k: float(np.mean([r[k] for r in sel]))
                                for k in ("psnr", "coverage95", "nll", "seconds")}
    args.out.write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, "
                                               f"{torch.get_num_threads()} threads, torch {torch.__version__}",
                                    "summary": summary, "rows": rows}, indent=1))
    for key, s in summary.items():
        print(f"{key}: {s['psnr']:.3f} dB, coverage {100 * s['coverage95']:.1f} %, {s['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
