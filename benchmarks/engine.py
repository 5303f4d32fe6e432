"""Issue 26, item 1: the network's UNet (`ConvCNP.unet`) under ONNX Runtime and OpenVINO against PyTorch's fused
oneDNN path, on the same 512²×6 tile, runs interleaved (A, B, C, A, B, C …: the machine's cores are shared);
medians and spreads, and the largest difference of the raw outputs from PyTorch float32.

The tile: the Itaipu sample's 3 bands twice (the second copy ×1.1), cut to 512², with simulated SLC-off stripes;
the features are those the model builds (SetConv, harmonic base) for it, single-image (9 channels).

Then, where the data folder is there, gap PSNR on the STS-CNN patches (both masks, single image) with each engine
in float32 and bfloat16; and `napari-convnp fill` end to end on the 1024²×6 file of `end_to_end.py` (process start
to file written, fresh processes, interleaved, the exported graph already in the cache), beside `--method
biharmonic`; the first (cold) OpenVINO run, which exports the graph, is reported apart.

python benchmarks/engine.py [--repeats 5] [--e2e-repeats 3] [--data ../shared/data] [--json benchmarks/engine.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from napari_convnp import engines, masks
from napari_convnp.model import harmonic_fill, load_model, normalise
from napari_convnp.scene import read_scene

ROOT = Path(__file__).resolve().parents[1]
SIDE = 512


def tile_features(model) -> tuple[torch.Tensor, int]:
    sample = read_scene(ROOT / "napari_convnp" / "sample_data" / "itaipu_landsat8_B234_768.tif").bands
    bands = np.concatenate([sample, sample * 1.1])[:, :SIDE, :SIDE]
    known = np.broadcast_to(~masks.simulate_slc_off((SIDE, SIDE), seed=0, pixel_size=30), bands.shape)
    normed, _, _ = normalise(bands, known)
    value = torch.from_numpy(np.where(known, normed, 0))[:, None]
    mask = torch.from_numpy(known.astype(np.float32))[:, None]
    with torch.inference_mode():
        smooth = model.setconv(value, mask)
        base = harmonic_fill(value, mask, model.config.harmonic_iters)
    return torch.cat([value, mask, smooth, base], 1), len(bands)


def runners(model, feats, n_bands) -> dict:
    """name → a call that runs the UNet on the tile's features and returns its raw outputs as float32 numpy."""
    def pytorch(dtype):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bfloat16"):
                return model.unet([feats.clone(memory_format=torch.channels_last)], n_bands).float().numpy()
        return run

    out = {"pytorch float32": pytorch("float32"), "pytorch bfloat16": pytorch("bfloat16")}
    engine_runs = {"onnxruntime float32": OnnxRuntimeUNet(model), "openvino float32": engines.OpenVinoUNet(model),
                   "openvino bfloat16": engines.OpenVinoUNet(model, "bfloat16")}
    for name, unet in engine_runs.items():
        out[name] = lambda unet=unet: unet([feats.clone()], n_bands).numpy()
    return out


class OnnxRuntimeUNet(engines.ExportedUNet):
    """The exported UNet under ONNX Runtime's CPU provider (float32; it has no bfloat16 convolutions on CPUs):
    measured here, not kept in the package."""

    def compile(self, path):
        import onnxruntime

        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(self, session, feats):
        return session.run(None, {"feats": feats})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--e2e-repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/engine_e2e"))
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "engine.json")
    args = parser.parse_args()
    model = load_model()
    feats, n_bands = tile_features(model)
    calls = runners(model, feats, n_bands)
    want = calls["pytorch float32"]()
    diffs = {name: float(np.abs(call() - want).max()) for name, call in calls.items()}  # also warms each up
    seconds = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(round(time.perf_counter() - start, 3))
    rows = [{"engine": name, "median_seconds": statistics.median(s), "min": min(s), "max": max(s), "runs": s,
             "max_abs_diff_from_pytorch_float32": diffs[name]} for name, s in seconds.items()]
    from end_to_end import cpu_name

    result = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "versions": versions(), "tile": f"{SIDE}²×{n_bands}, 9 feature channels (single image)",
              "tile_rows": rows}
    print("| UNet on one tile | median s | min–max | max abs diff from PyTorch float32 |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['median_seconds']:.2f} | {r['min']:.2f}–{r['max']:.2f} | "
              f"{r['max_abs_diff_from_pytorch_float32']:.1e} |", flush=True)
    sts = args.data / "benchmark" / "sts-cnn"
    result["sts_cnn"] = quality(model, sts) if sts.is_dir() else f"skipped: {sts} not found"
    result["end_to_end_1024"] = end_to_end(args.work, args.e2e_repeats)
    args.json.write_text(json.dumps(result, indent=1) + "\n")


def versions() -> dict:
    import importlib.metadata

    return {name: importlib.metadata.version(name) for name in ("onnxruntime", "openvino", "onnx")}


def quality(model, folder: Path) -> list[dict]:
    """Gap PSNR (and NLL, coverage) of the ConvNP on the STS-CNN patches, each engine and precision."""
    from napari_convnp.evaluate import STS_MASKS, score_cases, sts_cnn_cases

    rows = []
    for precision in ("float32", "bfloat16"):
        for engine in engines.ENGINES:
            run = engines.with_engine(model, engine, precision)
            for mask_name in STS_MASKS:
                scores = score_cases(sts_cnn_cases(folder, mask_name), ["convnp"], model=run, precision=precision)
                rows.append({"engine": engine, "precision": precision, "mask": mask_name,
                             **{k: round(v, 4) for k, v in scores["convnp"].items()}})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def end_to_end(work: Path, repeats: int) -> dict:
    """`napari-convnp fill` of the 1024²×6 file, fresh processes, runs interleaved; medians and spreads."""
    import os
    import tempfile

    from streaming import make_input, run_cli

    work.mkdir(parents=True, exist_ok=True)
    scene, mask = make_input(1024, work)
    runs = {f"convnp {p} {e}": ("--precision", p, "--engine", e) for p in ("bfloat16", "float32")
            for e in engines.ENGINES}
    runs["biharmonic"] = ("--method", "biharmonic")
    os.environ["NAPARI_CONVNP_CACHE"] = tempfile.mkdtemp(prefix="engine_cache_")  # an empty cache: a cold start
    cold = run_cli("cold", None, scene, mask, work, runs["convnp bfloat16 openvino"], False)
    Path(cold["out"]).unlink(missing_ok=True)
    (work / "cold_out_filled_mask.tif").unlink(missing_ok=True)
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, options in runs.items():
            run = run_cli("e2e", None, scene, mask, work, options, False)
            times[name].append({k: run[k] for k in ("wall_seconds", "fill_seconds", "peak_rss_gb")})
            print(name, json.dumps(times[name][-1]), flush=True)
            for path in (run["out"], run["variance"], work / "e2e_out_filled_mask.tif"):
                Path(path).unlink(missing_ok=True)
    summary = {name: {"median_wall_seconds": statistics.median(r["wall_seconds"] for r in rs),
                      "wall_seconds": [r["wall_seconds"] for r in rs],
                      "median_fill_seconds": statistics.median(r["fill_seconds"] for r in rs),
                      "peak_rss_gb": max(r["peak_rss_gb"] for r in rs)} for name, rs in times.items()}
    print("| 1024²×6 end to end | median wall s | runs | fill call median s | peak GB |\n|---|---|---|---|---|")
    for name, row in summary.items():
        print(f"| {name} | {row['median_wall_seconds']:.1f} | {', '.join(map(str, row['wall_seconds']))} | "
              f"{row['median_fill_seconds']:.1f} | {row['peak_rss_gb']:.2f} |")
    return {"cold_openvino_bfloat16_first_run": {k: cold[k] for k in ("wall_seconds", "fill_seconds")},
            "runs": summary}


if __name__ == "__main__":
    main()
