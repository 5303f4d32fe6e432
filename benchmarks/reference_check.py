"""How well the held-out fit (`fusion.held_out_error`) tells a reference of the same place from one of elsewhere:
the measure behind `inpaint.REFERENCE_POOR`, the note a fill gives when its reference predicts the scene poorly.

Right references: each date of a train/ or pairs/ (train and val) series with the next date of the same place, both
ways. Wrong ones: each date with the first date of the next series (and, for the OSCD cities, the next city), both
cropped to their common size and first bands, as a reference without georeferencing is aligned pixel for pixel.
The target's known pixels are those outside simulated SLC-off stripes (`evaluate.simulated_stripes`, seed 0).
The threshold is chosen here (on these series alone); the STS-CNN patches (an evaluation set) are only checked.

python benchmarks/reference_check.py [--data ../shared/data] [--json benchmarks/reference_check.json]
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from napari_convnp.evaluate import simulated_stripes
from napari_convnp.fusion import held_out_error
from napari_convnp.scene import read_scene

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SERIES = ("opengeos_data__pucallpa_*.tif", "xlandsat__LC08_L1TP_227074_*.tif",
                "xlandsat__LC08_L2SP_218074_*.tif", "teamlucc__L5TSR_*.tif")
PAIR_FOLDERS = ("nanjing_l5", "estarfm_canada", "fsdaf_gwydir", "ifsdaf_china_l8ndvi", "rsgislib_tanzania_s2",
                "eolearn_slovenia_s2")
CFMASK_UNKNOWN = (2, 3, 4, 255)  # a cfmask band (ifsdaf): shadow, snow, cloud and fill are unknown
ZERO_IS_CLOUD = ("rsgislib_tanzania_s2",)  # clouds and shadows set to 0


def load(path: Path, folder: str = "") -> np.ndarray:
    scene = read_scene(path)
    bands = np.where(scene.nodata, np.nan, scene.bands).astype(np.float32)
    if scene.band_names[-1] == "cfmask":
        bands = np.where(np.isin(bands[-1], CFMASK_UNKNOWN), np.nan, bands[:-1])
    if folder in ZERO_IS_CLOUD:
        bands[:, (bands == 0).all(0)] = np.nan
    return bands


def series(data: Path) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """(place, [(name, C×H×W with NaN unknown)]) of every train/val series, dates in order."""
    out = []
    for pattern in TRAIN_SERIES:
        paths = sorted((data / "train").glob(pattern))
        out.append((pattern, [(p.name, load(p)) for p in paths]))
    for folder in PAIR_FOLDERS:
        paths = sorted((data / "pairs" / folder).glob("*.tif"))
        dates = [(p.name, load(p, folder)) for p in paths]
        out.append((folder, [(name, bands) for name, bands in dates if np.isfinite(bands).all(0).mean() > 0.1]))
    oscd = sorted((data / "pairs" / "oscd_s2_30m").glob("*.tif"))
    cities: dict[str, list] = {}
    for p in oscd:
        cities.setdefault(re.split(r"_\d{4}-", p.name)[0], []).append(p)
    for city, paths in sorted(cities.items()):
        out.append((f"oscd {city}", [(p.name, load(p)) for p in paths]))
    return out


def error(target: np.ndarray, reference: np.ndarray, pixel_size=30.0) -> float:
    """held_out_error of the target (with simulated stripes) on the reference, on their common size and bands."""
    c = min(len(target), len(reference))
    h, w = min(target.shape[1], reference.shape[1]), min(target.shape[2], reference.shape[2])
    target, reference = target[:c, :h, :w], reference[:c, :h, :w]
    known = np.isfinite(target).all(0) & ~simulated_stripes((h, w), pixel_size, 0)
    return held_out_error(target, known, reference, np.isfinite(reference).all(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    places = series(args.data)
    right, wrong = [], []
    for i, (_, dates) in enumerate(places):
        elsewhere = places[(i + 1) % len(places)][1][0]
        for (a, ta), (b, tb) in zip(dates, dates[1:]):
            right += [(f"{a} ← {b}", error(ta, tb)), (f"{b} ← {a}", error(tb, ta))]
        for name, bands in dates:
            wrong.append((f"{name} ← {elsewhere[0]}", error(bands, elsewhere[1])))
    sts = args.data / "benchmark" / "sts-cnn"
    valid = read_scene(sts / "mask_slc1.tif").bands[0] > 0
    check = {"right": [], "wrong": []}
    for t in range(201, 206):
        target = read_scene(sts / f"patch{t}_target.tif").bands
        for r in range(201, 206):
            reference = read_scene(sts / f"patch{r}_auxiliary.tif").bands
            e = held_out_error(target, valid, reference, np.isfinite(reference).all(0))
            check["right" if t == r else "wrong"].append((f"patch{t} ← patch{r}", e))
    r, w = np.array([e for _, e in right]), np.array([e for _, e in wrong])
    print(f"right references ({len(r)}): max {r.max():.3f}, 95th percentile {np.quantile(r, 0.95):.3f}, "
          f"median {np.median(r):.3f}")
    print(f"wrong references ({len(w)}): min {w.min():.3f}, 5th percentile {np.quantile(w, 0.05):.3f}, "
          f"median {np.median(w):.3f}")
    for name, e in sorted(right, key=lambda x: -x[1])[:5]:
        print(f"  worst right  {e:.3f} {name}")
    for name, e in sorted(wrong, key=lambda x: x[1])[:5]:
        print(f"  best wrong   {e:.3f} {name}")
    for kind in ("right", "wrong"):
        values = [e for _, e in check[kind]]
        print(f"STS-CNN {kind} ({len(values)}): {min(values):.3f} – {max(values):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"right": right, "wrong": wrong, "sts_cnn_check": check}, indent=1))


if __name__ == "__main__":
    main()
