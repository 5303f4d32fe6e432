"""How much of the biharmonic fill the ConvNP's mean should take, and how well each scene can choose that itself.

The network's mean and the biharmonic fill err differently (on STS-CNN their gap errors correlate at 0.83), so a
blend (1 - w)·network + w·biharmonic beats both, by an amount and at a weight that differ from scene to scene.
For every case (the validation scenes with simulated SLC-off stripes, transplanted real gaps and discs; test/ with
simulated stripes; the STS-CNN patches with both real masks) this records the three numbers that give the blend's
squared error at any w (network, biharmonic, cross term), the best w, and the scene's own estimate of it: the
least-squares w on known pixels hidden with the scene's gap geometry (`calibration.scene_calibration`), for five seeds
and two numbers of tasks. Then the gap PSNR gain over the network alone of each rule. The rule is chosen on the
validation cases alone; test/ and STS-CNN show what it does elsewhere.

python benchmarks/biharmonic_blend.py [--data ../shared/data] [--json benchmarks/biharmonic_blend.json] [--rules-only]
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from unittest import mock

import numpy as np

from napari_convnp import calibration, evaluate, inpaint, masks, train
from napari_convnp.inpaint import _cached_model, fill
from napari_convnp.model import band_stats
from napari_convnp.scene import read_scene

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(5)
TASK_BOUNDS = ((2, 16), (8, 32))
VALIDATION_MASKS = (("slc", 0), ("slc", 1), ("real", 3), ("discs", 5))


def discs(shape, seed):
    """2-5 round holes of radius 5-60 px: painted clouds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    holes = np.zeros(shape, bool)
    for _ in range(rng.integers(2, 6)):
        cy, cx, radius = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.uniform(5, 60)
        holes |= (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    return holes


def cases(data: Path):
    """(name, bands, gaps, nodata) of every set."""
    rng = np.random.default_rng(7)
    sources = train.load_gap_sources(data / "slc_off")
    for path in sorted((data / "val").glob("*.tif")):
        bands = read_scene(path).bands.astype(np.float32)
        known = np.isfinite(bands)
        shape = bands.shape[1:]
        for kind, seed in VALIDATION_MASKS:
            if kind == "slc":
                offset = (int(rng.integers(0, 6000)), int(rng.integers(0, 1500)))
                holes = masks.simulate_slc_off(shape, seed=seed, pixel_size=30, crop_offset=offset)
            elif kind == "real":
                source, size = sources[seed % len(sources)]
                holes = masks.transplant_gaps(shape, source, seed=seed, source_pixel_size=size, pixel_size=30.0)
            else:
                holes = discs(shape, seed)
            yield f"val/{path.name}/{kind}{seed}", bands, np.broadcast_to(holes, bands.shape) & known, ~known
    for name, bands, gaps, _ in evaluate.simulated_cases(data / "test"):
        yield f"test/{name}", bands, np.ascontiguousarray(gaps), ~np.isfinite(bands)
    for mask_name in evaluate.STS_MASKS:
        for name, bands, gaps, _ in evaluate.sts_cnn_cases(data / "benchmark" / "sts-cnn", mask_name):
            yield f"sts-cnn/{mask_name}/{name}", bands, np.ascontiguousarray(gaps), np.zeros(bands.shape, bool)


def scene_estimate(model, bands, gaps, nodata, seed, bounds):
    """The least-squares weight on the scene's own hidden pixels as `calibration.scene_calibration` finds it, before it
    is taken towards the prior: (numerator, denominator)."""
    sums = []

    def record(prior, network_error, biharmonic_error):
        diff = network_error - biharmonic_error
        sums.extend([float((network_error * diff).sum()), float((diff * diff).sum())])
        return prior

    context = ~gaps & ~nodata
    with mock.patch.object(calibration, "CALIBRATION_TASKS", bounds), \
            mock.patch.object(calibration, "blend_weight", record):
        calibration.scene_calibration(model, np.nan_to_num(bands), *band_stats(bands, context), context, gaps,
                                      seed=seed)
    return tuple(sums)


def gain(case, w):
    """Gap PSNR gain (dB) of the blend with weight w over the network alone."""
    a, b, c = case["network_mse"], case["biharmonic_mse"], case["cross"]
    return float(10 * np.log10(a / (a * (1 - w) ** 2 + b * w ** 2 + 2 * c * w * (1 - w))))


def rules_from(rows):
    """Each rule's mean and worst gain per group of cases, and the rule with the best mean on the validation cases
    (compared unrounded)."""
    def summary(rule, bounds):
        out = {}
        for group in ("val", "test", "sts-cnn"):
            part = [r for r in rows if r["case"].startswith(group + "/")]
            gains = [[gain(r, rule(num / den)) for num, den in r["estimates"][bounds]] for r in part]
            out[group] = {"mean_gain_db": float(np.mean(gains)), "worst_gain_db": float(np.min(gains))}
        return out

    rules = [{"rule": f"fixed {w}", **summary(lambda _, w=w: w, "2-16")} for w in (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)]
    rules.append({"rule": "best weight of each case (not attainable)",
                  **{g: {"mean_gain_db": float(np.mean([gain(r, np.clip(r["best_weight"], 0, 1)) for r in rows
                                                        if r["case"].startswith(g + "/")]))}
                     for g in ("val", "test", "sts-cnn")}})
    for (lo, hi), trust, prior, cap in itertools.product(TASK_BOUNDS, (0.3, 0.5, 0.7, 1.0), (0.1, 0.15, 0.2, 0.25, 0.3),
                                                         (0.4, 0.6, 0.8)):
        rule = lambda own, t=trust, p=prior, m=cap: float(np.clip(t * own + (1 - t) * p, 0, m))  # noqa: E731
        rules.append({"rule": f"tasks {lo}-{hi}, trust {trust}, prior {prior}, at most {cap}",
                      **summary(rule, f"{lo}-{hi}")})
    chosen = max((r for r in rules if r["rule"].startswith("tasks")), key=lambda r: r["val"]["mean_gain_db"])["rule"]
    for r in rules:
        for group in ("val", "test", "sts-cnn"):
            r[group] = {k: round(v, 4) for k, v in r[group].items()}
    return rules, chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "biharmonic_blend.json")
    parser.add_argument("--rules-only", action="store_true", help="recompute the rules from the cases in --json")
    args = parser.parse_args()
    if args.rules_only:
        result = json.loads(args.json.read_text())
        result["rules"], result["best_rule_on_val"] = rules_from(result["cases"])
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print("best on val:", result["best_rule_on_val"], "| shipped:", result["shipped_rule"])
        return
    if not (args.data / "val").is_dir():
        raise SystemExit(f"{args.data}: no val/ folder; point --data at the shared Landsat data")
    inpaint.CALIBRATE_ON_SCENE = False  # the two fills as they are, each weight fixed (not chosen per scene)
    shipped = _cached_model("cpu")
    network = calibration.calibrated(shipped, biharmonic_weight=0.0)
    biharmonic = calibration.calibrated(shipped, biharmonic_weight=1.0)  # the mean is the biharmonic fill
    rows = []
    for name, bands, gaps, nodata in cases(args.data):
        given = np.where(gaps | nodata, np.nan, bands)
        net, smooth = ((fill(given, gaps, nodata=nodata, device="cpu", model=m).mean - bands)[gaps].astype(np.float64)
                       for m in (network, biharmonic))
        row = {"case": name, "network_mse": float(np.mean(net ** 2)), "biharmonic_mse": float(np.mean(smooth ** 2)),
               "cross": float(np.mean(net * smooth))}
        diff = net - smooth
        row["best_weight"] = float(np.dot(net, diff) / np.dot(diff, diff))
        row["estimates"] = {f"{lo}-{hi}": [scene_estimate(shipped, bands, gaps, nodata, seed, (lo, hi))
                                           for seed in SEEDS] for lo, hi in TASK_BOUNDS}
        rows.append(row)
        print(name, round(row["best_weight"], 3), round(gain(row, np.clip(row["best_weight"], 0, 1)), 3), flush=True)

    rules, chosen = rules_from(rows)
    low, high = calibration.CALIBRATION_TASKS
    shipped_rule = (f"tasks {low}-{high}, trust {calibration.BLEND_TRUST}, "
                    f"prior {shipped.config.biharmonic_weight}, at most {calibration.BLEND_MAX}")
    result = {"what": __doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1],
              "gain": "gap PSNR of the blend over the network's mean alone, dB, from the squared errors of the full "
                      "fills (tiled as the fill tiles); a rule's mean over cases and seeds, and its worst",
              "best_rule_on_val": chosen, "shipped_rule": shipped_rule, "rules": rules, "cases": rows}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    for r in rules:
        print(r)
    print("best on val:", chosen, "| shipped:", shipped_rule)


if __name__ == "__main__":
    main()
