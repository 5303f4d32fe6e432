"""Command line: napari-convnp fill | fill-many | fill-stack | water | train | evaluate.

Every error is one line on stderr, `napari-convnp: error: <file or option>: <problem>`, never a traceback.
Exit codes: 0 done; 1 `fill-many` with failed scenes, `fill-stack` with failed dates (or an internal error); 2 bad
input, options or output paths (found before any compute where they can be); 130 after SIGINT (Ctrl-C); 143
after SIGTERM.

This module imports nothing heavy at import time: the signal handlers are in place before numpy, torch
or Dask load, so an early Ctrl-C is one line too. The file-in/file-out work lives in `fileio`;
`fill_file`, `load_mask` and `scene_gaps` stay importable from here.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path

from .errors import ConvNPError, UsageError

PROG = "napari-convnp"
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
_FILEIO_EXPORTS = ("fill_file", "load_mask", "scene_gaps")


def __getattr__(name: str):
    """`napari_convnp.cli.fill_file` (and load_mask, scene_gaps): the public API of before, from fileio."""
    if name in _FILEIO_EXPORTS:
        from . import fileio

        return getattr(fileio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM arrived: unwinds the run like Ctrl-C, so temporary files go, and the exit
    code is 128 + the signal. Not a KeyboardInterrupt: Python may end a process that met one by SIGINT
    itself, whatever exit code the program returned."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


class Terminated(Interrupted):
    """SIGTERM arrived (exit code 143)."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has a real one (not for flags, required or unset options, nor where the
    help names it already). 0 is a real default: compared by identity, not `in (None, False)` (0 == False)."""

    def _get_help_string(self, action):
        default = action.default
        if (action.required or default is None or default is False or default is argparse.SUPPRESS
                or not action.help or "default" in action.help):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """One-line usage errors; options' defaults shown in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line instead of the usage block
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _progress_bar(what: str):
    """A progress line on stderr while it is a terminal (quiet in scripts, pipes and logs): (done, total)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
        sys.stderr.flush()

    return show


_received: list[int] = []  # signals this run has met; a library that swallows the exception cannot hide them


def _on_signal(signum, frame):
    _received.append(signum)
    raise (Terminated if signum == signal.SIGTERM else Interrupted)(signum)


def _stop_requested() -> bool:
    return bool(_received)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    about = {"what": _subject(argv)}  # what the run is about (the input file), named if it is interrupted
    _received.clear()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            if sig == signal.SIGINT and signal.getsignal(sig) is not signal.default_int_handler:
                continue  # ignored (a background job) or the caller's own handler: leave it
            previous[sig] = signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        code = _main(argv, about)
        signum = _received[0] if _received else None  # a signal some library swallowed still ends the run
    except Interrupted as err:
        code, signum = None, err.signum
    except KeyboardInterrupt:  # SIGINT through a handler other than ours
        code, signum = None, signal.SIGINT
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signum is None:
        return code
    what = "interrupted (SIGINT)" if signum == signal.SIGINT else "terminated (SIGTERM)"
    _error(f"{about['what']}: {what}; {about.get('kept', 'no output was written')}")
    return 128 + int(signum)


def _subject(argv: list[str]) -> str:
    """The input (fill) or output folder (fill-many) of a command line, before argparse (and the imports
    it needs) has run: a signal in the first second still names the file."""
    command = argv[0] if argv else ""
    if command in ("fill", "water"):
        rest = iter(argv[1:])
        for token in rest:
            if token in ("--no-filled-mask", "-h", "--help") or (token.startswith("--") and "=" in token):
                continue
            if token.startswith("-"):
                next(rest, None)  # the option's value
                continue
            return token
    if command in ("fill-many", "fill-stack"):
        for i, token in enumerate(argv):
            if token == "--out-dir" and i + 1 < len(argv):
                return argv[i + 1]
            if token.startswith("--out-dir="):
                return token.split("=", 1)[1]
    return f"{PROG} {command}".strip()


def _note(text: str) -> None:
    print(f"{PROG}: note: {text}", file=sys.stderr, flush=True)


def _numbers(text: str) -> list[float]:
    """'0,2,5' as numbers (an argparse type: its error becomes the one-line usage error)."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of numbers (write them as 0 or 1,3)") from None


def _band(text: str) -> int | str:
    """--qa-band: a band number counted from 1 (negative from the end) as a 0-based index, or a band name."""
    try:
        number = int(text)
    except ValueError:
        return text
    if number == 0:
        raise argparse.ArgumentTypeError("0 is no band number: the first band is 1, the last -1")
    return number - 1 if number > 0 else number


def _error(text: str) -> None:
    print(f"{PROG}: error: {' '.join(str(text).split())}", file=sys.stderr, flush=True)


def _main(argv, about: dict) -> int:
    if not os.environ.get("NAPARI_CONVNP_DEBUG"):
        import warnings

        warnings.simplefilter("ignore")  # stderr carries one line per error; library warnings are noise there
    try:
        parser = _parser()
        args = parser.parse_args(_signed_values(argv, parser))
        about["what"] = str(getattr(args, "input", None) or getattr(args, "out_dir", None) or args.command)
        if args.command in ("fill-many", "fill-stack"):
            about["kept"] = "finished scenes are kept; a re-run goes on from there"
        return _run(args)
    except UsageError as err:
        _error(str(err))
        return EXIT_BAD_INPUT
    except Exception as err:  # noqa: BLE001 - every error ends as one line
        if _received:  # the signal surfaced as another error (an import cut short, a cancelled fill)
            raise Interrupted(_received[0]) from None
        return _report(err, about)


def _report(err: Exception, about: dict) -> int:
    if isinstance(err, ConvNPError):
        _error(str(err))
    elif isinstance(err, MemoryError):
        _error(f"{about['what']}: out of memory; use a smaller scene, a smaller --tile or a machine with more memory")
    elif isinstance(err, OSError):
        _error(f"{err.filename or about['what']}: {err.strerror or err}")
    else:  # a bug: still one line, the traceback on request
        if os.environ.get("NAPARI_CONVNP_DEBUG"):
            raise err
        _error(f"{about['what']}: internal error ({type(err).__name__}: {err}); please report it "
               "(NAPARI_CONVNP_DEBUG=1 shows the traceback)")
        return EXIT_FAILED
    return EXIT_BAD_INPUT


def _signed_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """'--biharmonic-weight -inf' as '--biharmonic-weight=-inf': argparse takes a token that starts with '-' and is
    not a plain negative number for an option, so the value would be reported as missing ("expected one
    argument") instead of refused for what it is."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices.values()
    takes_value = {s for p in commands for a in p._actions if a.nargs != 0 for s in a.option_strings}
    joined: list[str] = []
    for token in argv:
        if joined and joined[-1] in takes_value and token.startswith("-") and _is_float(token):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


DEVICE_HELP = "auto, cpu, cuda or cuda:N (the N-th GPU)"
# how the command line spells each FillOptions field, to name it in an error
FLAGS = {"method": "--method", "density": "--density", "device": "--device", "seed": "--seed", "tile": "--tile",
         "precision": "--precision", "dtype": "--dtype", "references": "--reference", "adapt_steps": "--adapt",
         "biharmonic_weight": "--biharmonic-weight", "variance": "--variance"}


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .evaluate import SETS
    from .fusion import MAX_REFERENCES
    from .options import DTYPES, METHODS, NEEDS_REFERENCE, PRECISIONS
    from .qa import QA_KINDS

    parser = _Parser(prog=PROG, description="Fill Landsat 7 gaps with a ConvNP.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("fill", help="fill the gaps of one scene")
    p.add_argument("input", type=Path, help="GeoTIFF or Landsat product folder")
    p.add_argument("--out", type=Path, required=True,
                   help="output GeoTIFF (georeferencing kept; also writes OUT_filled_mask.tif)")
    p.add_argument("--mask", type=Path, help="mask GeoTIFF, nonzero = fill (default: detected gaps)")
    p.add_argument("--invert-mask", action="store_true",
                   help="the mask's 0 marks the pixels to fill, as in masks of the valid pixels (STS-CNN: 0 = gap)")
    p.add_argument("--mask-values", type=_numbers, metavar="V,V",
                   help="the mask's pixels holding these values are filled (a USGS gap mask: 0)")
    p.add_argument("--mask-bits", type=_numbers, metavar="B,B", help="the mask's pixels with any of these bits set "
                   "are filled (bit 0 = 1)")
    p.add_argument("--mask-qa", choices=("qa_pixel", "bqa", "fmask"),
                   help="the mask is a quality band of this layout: its clouds and cloud shadows are filled")
    p.add_argument("--fill-all-nodata", action="store_true",
                   help="fill every nodata pixel, large areas and the off-scene border too (the variance says how "
                        "unsure), not only the scan-line gaps and small holes")
    _fill_options(p, METHODS, DTYPES, PRECISIONS)
    p.add_argument("--variance", type=Path, help="also write the predictive variance here (ConvNP)")
    p.add_argument("--reference", type=Path, action="append",
                   help="another date of the same place as context (repeatable)")

    p = sub.add_parser("water", help="fill a scene, then map P(water) per pixel and the water area with its interval")
    p.add_argument("input", type=Path, help="GeoTIFF or Landsat product folder")
    p.add_argument("--out", type=Path, required=True, help="P(water) GeoTIFF, float32 in [0, 1] (georeferencing kept)")
    p.add_argument("--mask", type=Path, help="mask GeoTIFF, nonzero = fill (default: detected gaps)")
    p.add_argument("--invert-mask", action="store_true", help="the mask's 0 marks the pixels to fill")
    p.add_argument("--reference", type=Path, action="append",
                   help="another date of the same place as context (repeatable)")
    p.add_argument("--index", help="mndwi, ndwi, ndvi or two bands B_a,B_b: water is (a - b)/(a + b) > threshold "
                                   "(default: mndwi where green and SWIR1 are there, else ndwi)")
    p.add_argument("--threshold", type=float, help="in [-1, 1] (default 0, which assumes reflectance: choose one "
                                                   "for digital numbers)")
    _fill_options(p, METHODS, DTYPES, PRECISIONS, scene_outputs=False)

    p = sub.add_parser("fill-many", help="fill many scenes on a Dask cluster")
    p.add_argument("inputs", nargs="+", help="files, folders of .tif files, or glob patterns")
    p.add_argument("--out-dir", type=Path, required=True, help="folder for the outputs (made if missing)")
    # fill-many takes no reference
    _fill_options(p, [m for m in METHODS if m not in NEEDS_REFERENCE], DTYPES, PRECISIONS)
    p.add_argument("--variance", action="store_true", help="also write NAME_variance.tif")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, default=2, help="workers of the local cluster (1 or more)")

    p = sub.add_parser("fill-stack", help="fill every date of a place from the other dates, on a Dask cluster")
    p.add_argument("inputs", nargs="+", help="files, folders of .tif files, Landsat product folders or glob patterns "
                                            "of one place, one date each")
    p.add_argument("--out-dir", type=Path, required=True, help="folder for the outputs (made if missing)")
    # the fused references are the fill's one reference: a single-image method or the ConvNP
    _fill_options(p, [m for m in METHODS if m not in NEEDS_REFERENCE], DTYPES, PRECISIONS)
    p.add_argument("--variance", action="store_true", help="also write NAME_variance.tif")
    p.add_argument("--max-references", type=int, default=MAX_REFERENCES,
                   help="other dates fused into each date's reference, at most (1 or more)")
    p.add_argument("--qa", choices=QA_KINDS, help="the quality band's layout where its name does not say it "
                                                 "(mask: nonzero = cloud)")
    p.add_argument("--qa-band", type=_band, metavar="N|NAME",
                   help="a stacked GeoTIFF's quality band: its number (1 = first, -1 = last) or name")
    p.add_argument("--dilate", type=int, default=0, help="grow clouds and nodata by N pixels before use")
    p.add_argument("--fill-clouds", action="store_true",
                   help="fill each date's clouds and cloud shadows too (default: nodata and stripes only)")
    p.add_argument("--dates", help="D1,D2,…: one date per input scene, in input order, overriding the files' own")
    p.add_argument("--targets", help="D1,D2,…: fill these dates only (default: every date)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, default=2, help="workers of the local cluster (1 or more)")

    p = sub.add_parser("train", help="meta-train the ConvCNP on real Landsat tiles")
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with train/, val/, slc_off/")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (best on val/)")
    p.add_argument("--steps", type=int, default=5000, help="optimiser steps (or fewer, with --minutes)")
    p.add_argument("--minutes", type=float, help="stop (with a finished schedule) after this long")
    p.add_argument("--batch", type=int, default=8, help="tasks (tiles) per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, cosine schedule)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--cache", type=Path, help="npz cache of the prepared images (made if missing)")
    p.add_argument("--seed", type=int, default=0, help="seed of the task sampler and the initial weights")
    p.add_argument("--init", type=Path, help="start from this checkpoint (fine-tuning)")
    p.add_argument("--log-every", type=int, default=100, help="steps between validations (and checkpoints)")
    p.add_argument("--warmup", type=int, default=200, help="steps of linear learning-rate warm-up (1 or more)")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="training arithmetic (bfloat16: autocast, faster on CPUs with AVX-512 BF16)")
    p.add_argument("--single-image", action="store_true",
                   help="train a model without the second-date input (checkpoints before it)")
    p.add_argument("--last", type=Path, help="also write the weights at the end of training here")
    p.add_argument("--channels", help="UNet widths per resolution level, from scratch (default: the shipped model's "
                                      "12,24,48,64,96)")
    p.add_argument("--reference-share", default="0.35,0.25",
                   help="shares of the tasks with a real other date and with a synthetic one (default: 0.35,0.25)")

    p = sub.add_parser("evaluate", help="score the ConvNP and the baselines on the benchmark and test sets")
    p.add_argument("--data", type=Path, default=Path("../shared/data"),
                   help="folder with benchmark/sts-cnn/, test/, val/, slc_off/ and pairs/")
    p.add_argument("--methods", default=",".join(m for m in METHODS if m not in NEEDS_REFERENCE),
                   help="comma-separated methods to score (two-date baselines run on the two-date sets anyway)")
    p.add_argument("--json", type=Path, help="write the scores here")
    p.add_argument("--weights", type=Path, help="score this checkpoint instead of the shipped one")
    p.add_argument("--precision", default="float32", choices=PRECISIONS, help="ConvNP arithmetic")
    p.add_argument("--device", default="cpu", help=f"where the ConvNP runs: {DEVICE_HELP}")
    p.add_argument("--sets", default=",".join(SETS), help=f"evaluation sets, of {', '.join(SETS)}")
    return parser


def _fill_options(p, methods, dtypes, precisions, scene_outputs: bool = True):
    """The fill's options; scene_outputs: those of a filled-scene output too (--dtype, --no-filled-mask)."""
    from .options import NEEDS_REFERENCE

    two_date = [m for m in methods if m in NEEDS_REFERENCE]
    p.add_argument("--method", default="convnp", choices=methods,
                   help="the ConvNP or a classical fill" + (f" ({', '.join(two_date)} need --reference)"
                                                            if two_date else ""))
    p.add_argument("--density", type=float, default=1.0, help="fraction of known pixels used as context, (0, 1]")
    p.add_argument("--device", default="auto",
                   help=f"where the ConvNP runs: {DEVICE_HELP} (auto: a CUDA GPU when torch sees one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the context subsample (0 or more)")
    p.add_argument("--tile", type=int, help="tile side in pixels (default: 512 on CPU, 2048 on GPU); smaller "
                   "tiles need less memory and take longer (256: about 0.4 GB less, 1.4x the time)")
    p.add_argument("--precision", default="float32", choices=precisions,
                   help="ConvNP arithmetic; bfloat16 can be faster on CPUs with AVX-512 BF16 or AMX, and on GPUs")
    if scene_outputs:
        p.add_argument("--dtype", default="auto", choices=dtypes,
                       help="pixel type of the filled scene: auto (float32 for 8- and 16-bit integer and float16/32 "
                            "inputs, else float64), float32, float64, or source (the input's type; fills rounded)")
        p.add_argument("--no-filled-mask", action="store_true",
                       help="do not write the mask of filled pixels (OUT_filled_mask.tif)")
    from .adapt import DEFAULT_STEPS

    p.add_argument("--adapt", dest="adapt_steps", nargs="?", type=int, const=DEFAULT_STEPS, default=0,
                   metavar="STEPS", help="ConvNP: fine-tune on the scene itself first (test-time adaptation), "
                                         f"for STEPS steps ({DEFAULT_STEPS} when given alone; default: off)")
    p.add_argument("--adapt-steps", dest="adapt_steps", type=int, help="the same as --adapt STEPS")
    p.add_argument("--biharmonic-weight", type=float, metavar="W",
                   help="ConvNP: the share of the biharmonic fill in the mean where no reference is known, 0-1 "
                        "(default: chosen on the scene; 0: the network alone, about a quarter faster)")


def _run(args) -> int:
    if getattr(args, "precision", None) == "bfloat16":
        from .inpaint import run_precision

        note = run_precision(args.device, args.precision)[1]
        if note:
            print(f"{PROG}: note: {note}", file=sys.stderr, flush=True)
    if args.command == "fill":
        from .fileio import fill_file

        summary = fill_file(args.input, args.out, mask=args.mask, method=args.method, density=args.density,
                            variance=args.variance, device=args.device, seed=args.seed, tile=args.tile,
                            precision=args.precision, dtype=args.dtype, filled_mask=not args.no_filled_mask,
                            reference=args.reference, cancelled=_stop_requested,
                            progress=_progress_bar(f"filling {args.input.name}"), invert_mask=args.invert_mask,
                            mask_values=args.mask_values, mask_bits=args.mask_bits, mask_qa=args.mask_qa,
                            fill_all_nodata=args.fill_all_nodata, on_note=_note, **_convnp_options(args))
        print(json.dumps(summary))
    elif args.command == "water":
        from .water import water_file

        summary = water_file(args.input, args.out, mask=args.mask, invert_mask=args.invert_mask,
                             reference=args.reference, index=args.index, threshold=args.threshold,
                             method=args.method, density=args.density, device=args.device, seed=args.seed,
                             tile=args.tile, precision=args.precision, cancelled=_stop_requested,
                             progress=_progress_bar(f"filling {args.input.name}"), **_convnp_options(args))
        note = summary.pop("note", None)
        print(json.dumps(summary))
        for text in [note] * bool(note) + summary.get("notes", []):
            _note(text)
    elif args.command == "fill-many":
        from .batch import fill_many

        report = fill_many(args.inputs, args.out_dir, scheduler=args.scheduler, workers=args.workers,
                           variance=args.variance, method=args.method, density=args.density,
                           device=args.device, seed=args.seed, tile=args.tile, precision=args.precision,
                           dtype=args.dtype, filled_mask=not args.no_filled_mask,
                           progress=_progress_bar("filling scenes"), **_convnp_options(args))
        return _batch_report(report)
    elif args.command == "fill-stack":
        from .stack_files import fill_stack_files

        report = fill_stack_files(args.inputs, args.out_dir, dates=args.dates, qa=args.qa, qa_band=args.qa_band,
                                  dilate=args.dilate, max_references=args.max_references,
                                  fill_clouds=args.fill_clouds, variance=args.variance,
                                  filled_mask=not args.no_filled_mask, scheduler=args.scheduler,
                                  workers=args.workers, targets=args.targets, method=args.method,
                                  density=args.density, device=args.device, seed=args.seed, tile=args.tile,
                                  precision=args.precision, dtype=args.dtype, **_convnp_options(args))
        return _batch_report(report)
    elif args.command == "train":
        config, share = _check_train(args)
        from .inpaint import resolve_device
        from .train import train

        result = train(args.data, args.out, steps=args.steps, batch=args.batch, lr=args.lr,
                       device=resolve_device(args.device), seed=args.seed, cache=args.cache,
                       workers=args.workers, time_limit=args.minutes * 60 if args.minutes else None,
                       init=args.init, log_every=args.log_every, warmup=args.warmup, precision=args.precision,
                       reference=not args.single_image, last=args.last, config=config, reference_share=share)
        print(json.dumps(result["best"]))
    elif args.command == "evaluate":
        methods, sets = _check_evaluate(args)
        from .evaluate import evaluate_all, markdown
        from .inpaint import resolve_device

        results = evaluate_all(args.data, methods, device=resolve_device(args.device), weights=args.weights,
                               precision=args.precision, sets=sets)
        if args.json:
            _write_text_atomic(args.json, json.dumps(results, indent=1), [args.weights] if args.weights else [])
        print(markdown(results))
    return 0


def _batch_report(report: dict) -> int:
    """fill-many's and fill-stack's ending: the JSON report, then a line on stderr for each failed scene or date."""
    if _received:
        raise Interrupted(_received[0])
    print(json.dumps(report, indent=1), flush=True)
    for failed in report["failed"]:
        _error(failed["error"])
    return EXIT_FAILED if report["failed"] else 0


def _check_outputs(outputs: dict[str, Path | None], inputs, data: Path | None = None, anywhere=()) -> None:
    """The outputs of train and evaluate (checkpoints, scores, a cache) through the one output check
    (`scene.check_output_path`): never an input, never inside --data (but the options in `anywhere`), never
    two of them one file; refused before the work, naming the option."""
    from .errors import OptionError, SceneError
    from .tiffwrite import check_output_path, same_file

    given = [(option, Path(path)) for option, path in outputs.items() if path is not None]
    for i, (option, path) in enumerate(given):
        for other, other_path in given[i + 1:]:
            if same_file(path, other_path):
                raise OptionError(f"{path}: {option} and {other} name one file; give them different names")
        if data is not None and option not in anywhere and Path(data).resolve() in path.resolve().parents:
            raise OptionError(f"{path}: {option} lies inside --data {data}; write it elsewhere")
        try:
            check_output_path(path, [p for p in inputs if p is not None], tiff=False)
        except SceneError as err:
            raise OptionError(f"{option}: {err}") from None


def _write_text_atomic(path: Path, text: str, inputs=()) -> None:
    _check_outputs({"--json": path}, inputs)  # again: an input may have appeared there during the work
    tmp = path.parent / f".{path.name}.{os.getpid()}.partial"
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _convnp_options(args) -> dict:
    """--adapt-steps and --biharmonic-weight as fill options, only when asked for (the fill's defaults hold
    otherwise); every fill option is checked by `options.FillOptions` before any file is read, the error naming
    the flag."""
    from .errors import OptionError
    from .options import FillOptions

    references = tuple(getattr(args, "reference", None) or ())  # fill-many takes none
    try:
        FillOptions(method=args.method, density=args.density, device=args.device, seed=args.seed, tile=args.tile,
                    precision=args.precision, dtype=getattr(args, "dtype", "auto"), references=references,
                    adapt_steps=args.adapt_steps, biharmonic_weight=args.biharmonic_weight,
                    variance=bool(getattr(args, "variance", False))).validate()
    except OptionError as err:
        raise OptionError(f"{FLAGS[err.option]}: {err}") from None
    options = {"adapt_steps": args.adapt_steps} if args.adapt_steps else {}
    if args.biharmonic_weight is not None:
        options["biharmonic_weight"] = args.biharmonic_weight
    return options


def _check_train(args) -> tuple:
    """train's options as (model config or None, reference share), checked before torch loads."""
    from .fileio import OptionError
    from .tiffwrite import same_file

    for option, value in (("--steps", args.steps), ("--batch", args.batch), ("--log-every", args.log_every),
                          ("--warmup", args.warmup)):
        if value < 1:
            raise OptionError(f"{option} must be 1 or more, not {value}")
    if args.workers < 0:
        raise OptionError(f"--workers must be 0 (load in this process) or more, not {args.workers}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise OptionError(f"--lr must be a positive learning rate, not {args.lr}")
    if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
        raise OptionError(f"--minutes must be a positive time limit, not {args.minutes}")
    for option, path in (("--out", args.out), ("--last", args.last)):
        if path is not None and args.init is not None and same_file(path, args.init):
            raise OptionError(f"{path}: {option} is the --init checkpoint; training would overwrite it")
    cache = args.cache if args.cache is not None and not Path(args.cache).exists() else None  # made, or read
    _check_outputs({"--out": args.out, "--last": args.last, "--cache": cache},
                   [args.init, args.cache if cache is None else None], data=args.data, anywhere=("--cache",))
    if args.init is not None:
        _check_weights(args.init, "--init")
    try:
        share = tuple(float(x) for x in args.reference_share.split(","))
    except ValueError:
        share = ()
    if len(share) != 2 or not all(0 <= x <= 1 for x in share) or sum(share) > 1:
        raise OptionError(f"--reference-share takes two shares ≥ 0 that add up to at most 1 (real,synthetic), "
                          f"not '{args.reference_share}'")
    if not args.channels:
        return None, share
    if args.init:
        raise OptionError("--channels is for a model trained from scratch; --init takes the checkpoint's own widths")
    try:
        channels = tuple(int(x) for x in args.channels.split(","))
    except ValueError:
        channels = ()
    if len(channels) < 2 or min(channels) < 1:
        raise OptionError(f"--channels takes two or more whole widths ≥ 1 (one per level), not '{args.channels}'")
    from .model import ModelConfig

    return ModelConfig(channels=channels), share


def _check_evaluate(args) -> tuple[list[str], tuple[str, ...]]:
    """What `evaluate` reads and writes, checked before minutes of work (and before torch loads)."""
    from . import evaluate
    from .errors import SceneError
    from .fileio import OptionError
    from .inpaint import METHODS, NEEDS_REFERENCE

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise OptionError(f"--methods: unknown method {', '.join(unknown) or '(none given)'}; "
                          f"choose from {', '.join(METHODS)}")
    sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
    bad = [s for s in sets if s not in evaluate.SETS]
    if not sets or bad:
        raise OptionError(f"--sets: unknown set {', '.join(bad) or '(none given)'}; "
                          f"choose from {', '.join(evaluate.SETS)}")
    data = Path(args.data)
    if not data.is_dir():
        raise SceneError(f"{data}: --data is not a folder (it should hold benchmark/sts-cnn/, test/ and val/)")
    needs = evaluate.needed_inputs(data, sets)
    if any(m != "convnp" and m not in NEEDS_REFERENCE for m in methods):
        needs.append(data / "val")  # the best single-image baseline's variance is fitted there
    for path in needs:
        if path.suffix.lower() in (".tif", ".tiff") and not path.is_file():
            raise SceneError(f"{path}: missing from --data (evaluate needs it)")
        if not path.suffix and not any(p.suffix.lower() in (".tif", ".tiff") for p in path.glob("*")):
            raise SceneError(f"{path}: no GeoTIFF scenes there (evaluate needs them)")
    if args.json is not None:
        _check_outputs({"--json": args.json}, [args.weights], data=data)
    if "convnp" in methods and args.weights is not None:
        _check_weights(args.weights, "--weights")
    return methods, sets


def _check_weights(path: Path, option: str) -> None:
    """A checkpoint the command will load, loaded once first: a file that is none fails before any work."""
    from .errors import SceneError
    from .model import load_model

    if not Path(path).is_file():
        raise SceneError(f"{path}: no such file ({option})")
    try:
        load_model(path, "cpu")
    except Exception as err:  # noqa: BLE001 - whatever torch makes of a file that is not a checkpoint
        raise SceneError(f"{path}: not usable ConvNP weights ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]})") from None


if __name__ == "__main__":
    sys.exit(main())
