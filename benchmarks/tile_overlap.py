"""Gap PSNR of the ConvNP (default fill, bfloat16) against the overlap of its tiles, on real scenes filled in several
tiles with known truth: the two Menindee SLC-off dates (1000×2700, extra stripes transplanted from the other date's
real gaps) and the validation scenes of more than 0.2 Mpx (simulated stripes and transplanted real gaps, as
`biharmonic_blend.py` makes them). 512-px tiles (the CPU default) and 256-px tiles (four times the seams).

python benchmarks/tile_overlap.py [--data ../shared/data] [--json benchmarks/tile_overlap.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import biharmonic_blend  # noqa: E402  (the validation cases)

from napari_convnp import evaluate, inpaint  # noqa: E402
from napari_convnp.inpaint import fill  # noqa: E402

OVERLAPS = (64, 32)
TILES = (512, 256)


def cases(data: Path):
    for name, bands, gaps, data_range, _ in evaluate.menindee_cases(data / "slc_off", seeds=(0,)):
        yield name, bands, gaps, data_range
    for name, bands, gaps, _ in biharmonic_blend.cases(data):
        if name.startswith("val/") and ("/slc" in name or "/real" in name) and bands.shape[1] * bands.shape[2] > 2e5:
            yield name, bands, gaps, float(np.nanmax(bands) - np.nanmin(bands))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("tile_overlap.json"))
    args = parser.parse_args()
    if not (args.data / "slc_off").is_dir():
        sys.exit(f"{args.data}: no slc_off/ here; give --data the shared data folder")
    rows = []
    for tile in TILES:
        for overlap in OVERLAPS:
            inpaint.TILE_OVERLAP = overlap
            for name, bands, gaps, data_range in cases(args.data):
                start = time.perf_counter()
                mean = fill(bands, gaps, nodata=~np.isfinite(bands) & ~gaps, tile=tile, precision="bfloat16").mean
                error = (mean - bands)[gaps & np.isfinite(bands)].astype(np.float64)
                psnr = float(10 * np.log10(data_range ** 2 / np.mean(error ** 2)))
                rows.append({"tile": tile, "overlap": overlap, "case": name, "psnr": round(psnr, 4),
                             "seconds": round(time.perf_counter() - start, 1)})
                print(rows[-1], flush=True)
    summary = {}
    for tile in TILES:
        by_overlap = {o: [r["psnr"] for r in rows if r["tile"] == tile and r["overlap"] == o] for o in OVERLAPS}
        diffs = np.subtract(by_overlap[32], by_overlap[64])
        summary[f"tile {tile}: overlap 32 minus 64, dB"] = {"mean": round(float(diffs.mean()), 4),
                                                           "worst": round(float(diffs.min()), 4)}
    args.json.write_text(json.dumps({"what": __doc__.split("\n\n")[0], "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
