"""Issue 26, item 2 (a distilled student): how much faster could a smaller network make the fill, before spending
hours of CPU training on one? Times `inpaint.fill` on the end-to-end benchmark's 1024²×6 input with the shipped
network and with untrained networks of smaller widths or one level less (a network's time does not depend on its
weights), the blend on (the default) and off, in float32 and bfloat16, interleaved.

python benchmarks/student_speed.py [--repeats 2] [--json benchmarks/student_speed.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

from end_to_end import cpu_name
from streaming import make_input

SHAPES = {  # UNet widths per level; the shipped network's first
    "shipped": (12, 24, 48, 64, 96),
    "half width": (6, 12, 24, 32, 48),
    "widths of 8 and 16 multiples": (8, 16, 32, 48, 64),
    "the same, one level less": (8, 16, 32, 64),
    "one level less": (12, 24, 48, 64),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/e2e"))
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("student_speed.json"))
    args = parser.parse_args()

    import tifffile
    import torch

    from napari_convnp.inpaint import fill
    from napari_convnp.model import ConvCNP, load_model
    from napari_convnp.scene import read_scene

    scene_path, mask_path = make_input(1024, args.work, nodata=True)
    scene = read_scene(scene_path)
    mask = tifffile.imread(mask_path).astype(bool)
    shipped = load_model()
    models = {name: shipped if name == "shipped" else ConvCNP(replace(shipped.config, channels=widths)).eval()
              for name, widths in SHAPES.items()}
    seconds = {}
    for _ in range(args.repeats):
        for precision in ("float32", "bfloat16"):
            for name, model in models.items():
                for blend in (None, 0.0):
                    start = time.perf_counter()
                    fill(scene.bands, mask, model=model, nodata=scene.nodata, precision=precision,
                         biharmonic_weight=blend)
                    key = (name, precision, "default (blend)" if blend is None else "network alone")
                    seconds.setdefault(key, []).append(round(time.perf_counter() - start, 2))
                    print(*key, seconds[key][-1], flush=True)
    rows = []
    for (name, precision, mode), runs in seconds.items():
        base = statistics.median(seconds[("shipped", precision, mode)])
        rows.append({"network": name, "channels": SHAPES[name],
                     "parameters": sum(p.numel() for p in models[name].parameters()), "precision": precision,
                     "fill": mode, "seconds": runs, "median_s": round(statistics.median(runs), 2),
                     "vs_shipped": round(statistics.median(runs) / base, 2)})
    print("| network | precision | fill | median s | × shipped |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['network']} {row['channels']} | {row['precision']} | {row['fill']} | {row['median_s']} | "
              f"{row['vs_shipped']} |")
    args.json.write_text(json.dumps({"measured": "inpaint.fill on end_to_end.py's 1024²×6 input, seconds per call",
                                     "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                                                 "torch": torch.__version__}, "rows": rows},
                                    indent=1) + "\n")


if __name__ == "__main__":
    main()
