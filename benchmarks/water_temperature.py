"""Issue 27: would a sharper or softer spread bring the Brier target (0.80× biharmonic's error rate on reflectance
scenes) in reach? P = Φ(μ/σ) of the index's latent difference, so scaling σ by s gives P' = Φ(Φ⁻¹(P)/s) without
refilling: this reads the P and truths `water.py` kept (its raw pickle) and scores P' for a range of s, per set
and pooled over the reflectance sets, with the worst per-scene ECE. s is fitted here on the very pixels it is scored
on, so the best row is an upper bound on what any calibration of the spread could give, not a result.

    python benchmarks/water.py …   (once; keeps its raw pickle)
    python benchmarks/water_temperature.py [--json benchmarks/water_temperature.json]
"""
from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
from scipy.special import ndtr, ndtri
from water import MIN_WATER, RAW, REFLECTANCE_SETS, _brier, reliability

SCALES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def arrays(pooled, sets, label):
    entries = [pooled[(s, label)] for s in sets if (s, label) in pooled]
    return [np.concatenate([np.concatenate(e[key]) for e in entries]) for key in ("p", "y", "scene")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("water_temperature.json"))
    args = parser.parse_args()
    with open(RAW, "rb") as f:
        pooled = pickle.load(f)[0]
    sets = sorted({s for s, _ in pooled})
    rows = []
    for name, chosen in [("reflectance (" + " + ".join(REFLECTANCE_SETS) + ")", REFLECTANCE_SETS),
                         *((s, (s,)) for s in sets)]:
        p_b, y_b, _ = arrays(pooled, chosen, "biharmonic")
        p, y, scene = arrays(pooled, chosen, "convnp")
        p, y, base = p.astype(np.float64), y.astype(np.float64), _brier(p_b, y_b)
        z = ndtri(np.clip(p, 1e-12, 1 - 1e-12))
        for s in SCALES:
            q = ndtr(z / s)
            worst = max((reliability(q[scene == n], y[scene == n])[1] for n in set(scene)
                         if ((scene == n) & (y > 0.5)).sum() >= MIN_WATER), default=None)
            rows.append({"set": name, "s": s, "brier": _brier(q, y), "vs_biharmonic": round(_brier(q, y) / base, 3),
                         "worst_scene_ece": worst})
            print(rows[-1], flush=True)
    args.json.write_text(json.dumps({"measured": __doc__.splitlines()[0], "raw": str(RAW), "rows": rows},
                                    indent=1) + "\n")


if __name__ == "__main__":
    main()
