"""Scores of the ConvNP and every baseline on real Landsat: the STS-CNN benchmark patches with their
real SLC-off masks, and the test/ scenes with simulated SLC-off masks. Gap pixels only."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import masks, metrics
from .inpaint import METHODS, fill
from .scene import read_scene
from .model import band_stats

STS_PATCHES = [f"patch{i}_target.tif" for i in range(201, 206)]


def sts_cnn_cases(folder: Path, mask_name: str):
    """(name, bands in [0, 1], gap mask C×H×W, data range) for the five STS-CNN patches."""
    gaps = read_scene(folder / mask_name).bands[0] == 0  # 0 = gap, 255 = valid
    for name in STS_PATCHES:
        bands = read_scene(folder / name).bands
        yield name, bands, np.broadcast_to(gaps, bands.shape), 1.0


def simulated_cases(folder: Path, seeds=(0, 1, 2)):
    """Each complete test/ scene with seeded SLC-off stripes at seeded places in a full scene."""
    for path in sorted(folder.glob("*.[tT][iI][fF]")):
        scene = read_scene(path)
        data_range = float(np.iinfo(scene.source_dtype).max) if np.dtype(scene.source_dtype).kind == "u" else \
            float(np.nanmax(scene.bands) - np.nanmin(scene.bands))
        for seed in seeds:
            rng = np.random.default_rng(seed)
            offset = (int(rng.integers(0, 6000)), int(rng.integers(0, 2000)))  # the outer thirds: wide gaps
            if seed % 2:
                offset = (offset[0], 6167 - scene.shape[2] - offset[1])
            stripes = masks.simulate_slc_off(scene.shape[1:], seed=seed, pixel_size=scene.pixel_size,
                                             crop_offset=offset)
            gaps = np.broadcast_to(stripes, scene.shape) & ~scene.nodata
            yield f"{path.name}#{seed}", scene.bands, gaps, data_range


def constant_variance(folder: Path, method: str) -> float:
    """The variance, in per-band z-score units, of `method`'s gap errors on the val/ scenes: turns a
    classical fill into a Gaussian for a fair NLL comparison."""
    errors = []
    for _, bands, gaps, _ in simulated_cases(folder, seeds=(0,)):
        result = fill(bands, gaps, method=method, nodata=~np.isfinite(bands) & ~gaps)
        _, scales = band_stats(bands, ~gaps & np.isfinite(bands))
        errors.append(((result.mean - bands) / scales[:, None, None])[gaps])
    return float(np.mean(np.concatenate(errors) ** 2))


def score_cases(cases, methods, device="cpu", baseline_variance: dict | None = None, model=None,
                precision: str = "float32") -> dict:
    """Mean scores per method over the cases, and seconds per megapixel (rows×columns, all bands)."""
    results = {m: [] for m in methods}
    seconds = {m: 0.0 for m in methods}
    megapixels = 0.0
    for name, bands, gaps, data_range in cases:
        megapixels += bands.shape[1] * bands.shape[2] / 1e6
        nodata = ~np.isfinite(bands) & ~gaps  # off-scene NaN (Talca): neither context nor scored
        for method in methods:
            start = time.perf_counter()
            result = fill(bands, gaps, method=method, device=device, model=model, precision=precision,
                          nodata=nodata)
            seconds[method] += time.perf_counter() - start
            variance = result.variance
            if variance is None and baseline_variance and method in baseline_variance:
                _, scales = band_stats(bands, ~gaps & np.isfinite(bands))
                variance = np.broadcast_to(baseline_variance[method] * scales[:, None, None] ** 2, bands.shape)
            results[method].append(metrics.scores(result.mean, bands, gaps, data_range, variance))
    summary = {}
    for method, rows in results.items():
        summary[method] = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
        summary[method]["seconds_per_megapixel"] = seconds[method] / megapixels
    return summary


def evaluate_all(data_dir: Path, methods=METHODS, device="cpu", weights: Path | None = None,
                 precision: str = "float32") -> dict:
    """Scores on both benchmark sets; `weights`: a checkpoint other than the shipped one."""
    from .model import load_model

    data_dir = Path(data_dir)
    methods = list(methods)
    model = load_model(weights, device) if "convnp" in methods else None
    baselines = [m for m in methods if m != "convnp"]
    sts = data_dir / "benchmark" / "sts-cnn"
    out, variance = {}, {}
    if baselines:  # the best baseline on val/ gets a constant variance fitted on val/ (for the NLL comparison)
        val_psnr = score_cases(simulated_cases(data_dir / "val", seeds=(0,)), baselines)
        best = max(val_psnr, key=lambda m: val_psnr[m]["psnr"])
        variance = {best: constant_variance(data_dir / "val", best)}
        out = {"best_baseline_on_val": best, "constant_variance_z": variance[best]}
    for mask_name in ("mask_slc1.tif", "mask_slc2.tif"):
        out[f"sts-cnn {mask_name}"] = score_cases(sts_cnn_cases(sts, mask_name), methods, device, variance, model,
                                                          precision)
    out["test simulated SLC-off"] = score_cases(simulated_cases(data_dir / "test"), methods, device, variance, model,
                                                   precision)
    return out


def markdown(results: dict) -> str:
    """The scores as Markdown tables, one per data set (for the README)."""
    lines = []
    for name, scores in results.items():
        if not isinstance(scores, dict):
            continue
        lines += [f"**{name}** (gap pixels only)", "",
                  "| method | PSNR dB | SSIM | RMSE | NLL | 95 % coverage | s / megapixel |", "|---|---|---|---|---|---|---|"]
        for method, s in sorted(scores.items(), key=lambda kv: -kv[1]["psnr"]):
            nll = f"{s['nll']:.3f}" if "nll" in s else "–"
            cov = f"{100 * s['coverage95']:.1f} %" if "coverage95" in s else "–"
            lines.append(f"| {method} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['rmse']:.4g} | {nll} | {cov} | "
                         f"{s['seconds_per_megapixel']:.2f} |")
        lines.append("")
    return "\n".join(lines)
