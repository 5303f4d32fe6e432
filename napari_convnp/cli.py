"""Command line: napari-convnp fill | fill-many | train | evaluate."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .inpaint import METHODS, FillError, fill
from .masks import MaskError, detect_gaps, scene_zero_is_ambiguous
from .scene import Scene, SceneError, read_scene, write_scene


def load_mask(path: Path, scene: Scene) -> np.ndarray:
    """A mask file (nonzero = fill) as C×H×W bool for `scene`."""
    values = read_scene(path).bands
    mask = np.nan_to_num(values) != 0
    if mask.shape[1:] != scene.shape[1:]:
        raise MaskError(f"{path}: mask is {mask.shape[2]}×{mask.shape[1]} pixels but the scene is "
                        f"{scene.shape[2]}×{scene.shape[1]}")
    if len(mask) == 1:
        return np.broadcast_to(mask, scene.shape)
    if len(mask) != scene.shape[0]:
        raise MaskError(f"{path}: mask has {len(mask)} bands but the scene has {scene.shape[0]}")
    return mask


def scene_gaps(scene: Scene) -> np.ndarray:
    """The gaps to fill when no mask is given: detected scan-line gaps and small holes."""
    gaps = detect_gaps(scene.bands, scene.nodata, pixel_size=scene.pixel_size,
                       zero_is_ambiguous=scene_zero_is_ambiguous(scene.nodata_value, scene.source_dtype))
    if not gaps.any():
        raise MaskError(f"{scene.path}: no gaps detected; pass --mask to say which pixels to fill")
    return gaps


def fill_file(input: Path, out: Path, *, mask: Path | None = None, method: str = "convnp", density: float = 1.0,
              variance: Path | None = None, device: str = "auto", seed: int = 0, tile: int | None = None,
              precision: str = "float32", progress=None) -> dict:
    """Fill one scene file and write the result (and variance) as GeoTIFF; returns a summary."""
    for target in (out, variance):
        if target is not None and Path(target).resolve() in {Path(input).resolve(), Path(mask).resolve() if mask else None}:
            raise SceneError(f"{target}: refusing to overwrite an input file; choose another output name")
    scene = read_scene(input)
    gaps = load_mask(Path(mask), scene) if mask else scene_gaps(scene)
    result = fill(scene.bands, gaps, method=method, density=density, nodata=scene.nodata & ~gaps,
                  device=device, seed=seed, tile=tile, precision=precision, progress=progress)
    protect = (input,) + ((mask,) if mask else ())
    write_scene(scene.with_bands(result.mean), out, protect=protect)
    if variance is not None:
        if result.variance is None:
            raise FillError(f"method '{method}' gives no variance; use --method convnp for --variance")
        names = [f"{n} variance" for n in scene.band_names]
        write_scene(scene.with_bands(result.variance, names), variance, protect=protect)
    return {"input": str(input), "out": str(out), "method": method, "device": result.device,
            "filled_pixels": int(gaps.sum()), "seconds": round(result.seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="napari-convnp", description="Fill Landsat 7 gaps with a ConvNP.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fill", help="fill the gaps of one scene")
    p.add_argument("input", type=Path, help="GeoTIFF or Landsat product folder")
    p.add_argument("--out", type=Path, required=True, help="output GeoTIFF (float32, georeferencing kept)")
    p.add_argument("--mask", type=Path, help="mask GeoTIFF, nonzero = fill (default: detected gaps)")
    _fill_options(p)
    p.add_argument("--variance", type=Path, help="also write the predictive variance here")

    p = sub.add_parser("fill-many", help="fill many scenes on a Dask cluster")
    p.add_argument("inputs", nargs="+", help="files, folders of .tif files, or glob patterns")
    p.add_argument("--out-dir", type=Path, required=True)
    _fill_options(p)
    p.add_argument("--variance", action="store_true", help="also write NAME_variance.tif")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, default=2, help="workers of the local cluster")

    p = sub.add_parser("train", help="meta-train the ConvCNP on real Landsat tiles")
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with train/, val/, slc_off/")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (best on val/)")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--minutes", type=float, help="stop (with a finished schedule) after this long")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--cache", type=Path, help="npz cache of the prepared images (made if missing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, help="start from this checkpoint (fine-tuning)")
    p.add_argument("--log-every", type=int, default=100, help="steps between validations (and checkpoints)")

    p = sub.add_parser("evaluate", help="score the ConvNP and the baselines on the benchmark and test sets")
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--json", type=Path, help="write the scores here")
    p.add_argument("--weights", type=Path, help="score this checkpoint instead of the shipped one")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (SceneError, MaskError, FillError, FileNotFoundError) as err:
        print(f"napari-convnp: error: {err}", file=sys.stderr)
        return 2


def _fill_options(p):
    p.add_argument("--method", default="convnp", choices=METHODS)
    p.add_argument("--density", type=float, default=1.0, help="fraction of known pixels used as context, (0, 1]")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tile", type=int, help="tile side in pixels (default: 512 on CPU, 2048 on GPU)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                   help="ConvNP arithmetic; bfloat16 is about twice as fast on recent CPUs and GPUs")


def _run(args) -> int:
    if args.command == "fill":
        summary = fill_file(args.input, args.out, mask=args.mask, method=args.method, density=args.density,
                            variance=args.variance, device=args.device, seed=args.seed, tile=args.tile,
                            precision=args.precision)
        print(json.dumps(summary))
    elif args.command == "fill-many":
        from .batch import fill_many

        report = fill_many(args.inputs, args.out_dir, scheduler=args.scheduler, workers=args.workers,
                           variance=args.variance, method=args.method, density=args.density,
                           device=args.device, seed=args.seed, tile=args.tile, precision=args.precision)
        print(json.dumps(report, indent=1))
        return 1 if report["failed"] else 0
    elif args.command == "train":
        from .inpaint import resolve_device
        from .train import train

        result = train(args.data, args.out, steps=args.steps, batch=args.batch, lr=args.lr,
                       device=resolve_device(args.device), seed=args.seed, cache=args.cache,
                       workers=args.workers, time_limit=args.minutes * 60 if args.minutes else None,
                       init=args.init, log_every=args.log_every)
        print(json.dumps(result["best"]))
    elif args.command == "evaluate":
        from .evaluate import evaluate_all, markdown
        from .inpaint import resolve_device

        results = evaluate_all(args.data, args.methods.split(","), device=resolve_device(args.device),
                               weights=args.weights, precision=args.precision)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
