"""Issue 26, item 1 (tried and dropped, see profile.md): the network's UNet (`ConvCNP.unet`, encoder features →
head outputs) exported to ONNX in its plain-layer form and run by ONNX Runtime and by OpenVINO, against PyTorch's
fused oneDNN path. Three parts, each engine run interleaved with the others (the machine's cores are shared):

tile: the UNet alone on the same 512²×6 tile (the Itaipu sample's 3 bands twice, the second ×1.1, simulated SLC-off
stripes; the features the model builds for it, single image: 9 channels); medians, spreads, and the largest
difference of the raw outputs from PyTorch float32.
quality: gap PSNR, NLL and coverage on the STS-CNN patches (both masks, single image), each engine in float32 and
bfloat16, through `evaluate.score_cases` (the whole fill: calibration, tiles, blends).
e2e: `napari-convnp fill` end to end on the 1024²×6 file of `end_to_end.py` (process start to file written, fresh
processes, graph already exported), beside `--method biharmonic`; the first (cold) OpenVINO run, which exports
the graph, apart. The OpenVINO runs start through this file's `sitecustomize` hook (OPENVINO_UNET set), which puts
the engine under the CLI's model: the package itself has no engine option.

python benchmarks/engine.py [--parts tile,quality,e2e] [--repeats 5] [--e2e-repeats 2] [--data ../shared/data]
  [--json benchmarks/engine.json]   (parts run alone replace their own entries of an existing JSON file; the
  committed engine.json gathers four runs of 2026-12-07 by time and machine load, by hand, as profile.md cites them)
Needs onnx, onnxruntime and openvino (pip), none of them a dependency of the package.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from napari_convnp import masks
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
    engine_runs = {"onnxruntime float32": OnnxRuntimeUNet(model), "openvino float32": OpenVinoUNet(model),
                   "openvino bfloat16": OpenVinoUNet(model)}
    for name, unet in engine_runs.items():
        dtype = torch.bfloat16 if name.endswith("bfloat16") else torch.float32
        out[name] = lambda unet=unet, dtype=dtype: unet([feats.to(dtype)], n_bands).numpy()
    return out


def with_unet(model, unet_class):
    """The model (same weights) with its UNet run by another engine."""
    run = copy.copy(model)
    run.unet = unet_class(model)
    return run


class ExportedUNet:
    """`model.unet` as an ONNX graph (one per band count and feature count; batch, height and width free), run by
    a subclass: (feature parts, band count) → the head's raw outputs, float32."""

    def __init__(self, model):
        self.model = model
        self.runners = {}

    def __call__(self, parts, n_bands: int):
        feats = torch.cat(parts, 1)
        parts.clear()
        key = (n_bands, feats.shape[1], feats.dtype)  # bfloat16 features: the engine's bfloat16, where it has one
        if key not in self.runners:
            self.runners[key] = self.compile(self.exported(n_bands, feats.shape[1]), feats.dtype)
        return torch.from_numpy(self.run(self.runners[key], feats.float().contiguous().numpy()))

    def exported(self, n_bands: int, channels: int) -> Path:
        folder = Path(os.environ.get("ENGINE_GRAPHS") or tempfile.gettempdir())
        path = folder / f"convcnp_unet_{n_bands}x{channels}.onnx"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            free = {0: "bands of tiles", 2: "height", 3: "width"}  # scenes × bands: the calibration runs batches
            graph = UNetGraph(self.model, n_bands)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python ints
                torch.onnx.export(graph, (torch.zeros(n_bands, channels, 64, 64),), str(path), input_names=["feats"],
                                  output_names=["raw"], dynamic_axes={"feats": free, "raw": free}, opset_version=17,
                                  dynamo=False)
        return path


class UNetGraph(torch.nn.Module):
    """The UNet as a module of one input, for the exporter (which makes `cpu_kernels` take the plain layers)."""

    def __init__(self, model, n_bands: int):
        super().__init__()
        self.model, self.n_bands = model, n_bands

    def forward(self, feats):
        return self.model.unet([feats], self.n_bands)


class OnnxRuntimeUNet(ExportedUNet):
    """ONNX Runtime's CPU provider, float32 (it has no bfloat16 convolutions on CPUs)."""

    def compile(self, path, dtype):
        import onnxruntime

        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(self, session, feats):
        return session.run(None, {"feats": feats})[0]


class OpenVinoUNet(ExportedUNet):
    """OpenVINO's CPU plugin, its inference precision the features' (bfloat16 under the fill's autocast)."""

    def compile(self, path, dtype):
        import openvino

        hint = "bf16" if dtype == torch.bfloat16 else "f32"
        return openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint})

    def run(self, compiled, feats):
        return compiled(feats)[0]


def install_in_cli() -> None:
    """Called by `sitecustomize` in a CLI process with OPENVINO_UNET set: the fill's model runs its UNet on
    OpenVINO."""
    from napari_convnp import inpaint

    inpaint._cached_model = lambda device: with_unet(load_model(device=device), OpenVinoUNet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="tile,quality,e2e")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--e2e-repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/engine_e2e"))
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "engine.json")
    args = parser.parse_args()
    parts = args.parts.split(",")
    result = json.loads(args.json.read_text()) if args.json.exists() else {}
    from end_to_end import cpu_name

    result.update(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__, versions=versions())
    model = load_model()
    if "tile" in parts:
        result.update(tile_unet(model, args.repeats))
    sts = args.data / "benchmark" / "sts-cnn"
    if "quality" in parts:
        result["sts_cnn"] = quality(model, sts) if sts.is_dir() else f"skipped: {sts} not found"
    if "e2e" in parts:
        result["end_to_end_1024"] = end_to_end(args.work, args.e2e_repeats)
    args.json.write_text(json.dumps(result, indent=1) + "\n")


def tile_unet(model, repeats: int) -> dict:
    """The UNet alone on one tile, each engine, runs interleaved; the largest difference from PyTorch float32."""
    feats, n_bands = tile_features(model)
    calls = runners(model, feats, n_bands)
    want = calls["pytorch float32"]()
    diffs = {name: float(np.abs(call() - want).max()) for name, call in calls.items()}  # also warms each up
    seconds = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(round(time.perf_counter() - start, 3))
    rows = [{"engine": name, "median_seconds": statistics.median(s), "min": min(s), "max": max(s), "runs": s,
             "max_abs_diff_from_pytorch_float32": diffs[name]} for name, s in seconds.items()]
    print("| UNet on one tile | median s | min–max | max abs diff from PyTorch float32 |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['median_seconds']:.2f} | {r['min']:.2f}–{r['max']:.2f} | "
              f"{r['max_abs_diff_from_pytorch_float32']:.1e} |", flush=True)
    return {"tile": f"{SIDE}²×{n_bands}, 9 feature channels (single image)", "tile_rows": rows}

def versions() -> dict:
    import importlib.metadata

    return {name: importlib.metadata.version(name) for name in ("onnxruntime", "openvino", "onnx")}


def quality(model, folder: Path) -> list[dict]:
    """Gap PSNR (and NLL, coverage) of the ConvNP on the STS-CNN patches, each engine and precision."""
    from napari_convnp.evaluate import STS_MASKS, score_cases, sts_cnn_cases

    rows = []
    for precision in ("float32", "bfloat16"):
        for engine, run in (("pytorch", model), ("openvino", with_unet(model, OpenVinoUNet))):
            for mask_name in STS_MASKS:
                scores = score_cases(sts_cnn_cases(folder, mask_name), ["convnp"], model=run, precision=precision)
                rows.append({"engine": engine, "precision": precision, "mask": mask_name,
                             **{k: round(v, 4) for k, v in scores["convnp"].items()}})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def end_to_end(work: Path, repeats: int) -> dict:
    """`napari-convnp fill` of the 1024²×6 file, fresh processes, runs interleaved; medians and spreads."""
    from streaming import make_input, run_cli

    work.mkdir(parents=True, exist_ok=True)
    scene, mask = make_input(1024, work)
    runs = {f"convnp {p} {e}": (e, ("--precision", p))
            for p in ("bfloat16", "float32") for e in ("pytorch", "openvino")}
    runs["biharmonic"] = ("pytorch", ("--method", "biharmonic"))
    os.environ["ENGINE_GRAPHS"] = tempfile.mkdtemp(prefix="engine_graphs_")  # none exported yet: a cold start
    here = str(Path(__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])

    def run(label, engine, options):
        os.environ.pop("OPENVINO_UNET", None)
        if engine == "openvino":
            os.environ["OPENVINO_UNET"] = "1"
        done = run_cli(label, None, scene, mask, work, options, False)
        for path in (done["out"], done["variance"], work / f"{label}_out_filled_mask.tif"):
            Path(path).unlink(missing_ok=True)
        return done

    cold = run("cold", *runs["convnp bfloat16 openvino"])
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (engine, options) in runs.items():
            done = run("e2e", engine, options)
            times[name].append({k: done[k] for k in ("wall_seconds", "fill_seconds", "peak_rss_gb")})
            print(name, json.dumps(times[name][-1]), flush=True)
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
