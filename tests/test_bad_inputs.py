"""Bad input, as a hostile user brings it, against the command line run as a subprocess (issue 11).

Every case asserts the documented exit code (2 bad input, 1 `fill-many` with a failed scene, 130 / 143
after SIGINT / SIGTERM), one line on stderr naming the file (or option), no traceback, every input's
sha256 unchanged, and no file (nor a temporary one) at the final output names.

The cases run as subprocesses three at a time (a module fixture), and each is its own test.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tifffile

from .conftest import EVALUATE_SETS, fake_evaluate_data, gap_mask, product, smooth, write_geotiff

pytestmark = pytest.mark.slow  # every case runs the command line in its own process

CLI = [sys.executable, "-m", "napari_convnp.cli"]


@dataclass
class Case:
    """build(d) makes the inputs under d/'in' and returns (arguments, outputs that must not appear, what the
    error line must name)."""

    id: str
    build: Callable[[Path], tuple[list[str], list[Path], str]]
    code: int = 2
    lines: int = 1
    signal: int | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


def scene_file(d: Path, name="s.tif", c=2, dtype=np.uint16, h=64, w=96, **kwargs) -> Path:
    """A scene with a scan-line gap stored as nodata 0."""
    bands = smooth(c, h, w, dtype)
    bands[:, 20:23] = 0
    return write_geotiff(d / "in" / name, bands, nodata=0, **kwargs)


def fill(d: Path, src, *extra, out="o.tif", method="idw") -> tuple[list[str], list[Path]]:
    out = d / "out" / out if isinstance(out, str) else out
    return ["fill", str(src), "--out", str(out), "--method", method, *map(str, extra)], [out, _sidecar(out)]


def _sidecar(out: Path) -> Path:
    return out.with_name(f"{out.stem}_filled_mask.tif")


def truncated(d: Path, compression, fraction=0.6, name="t.tif", **kwargs) -> Path:
    bands = smooth(1, 300, 300, np.uint8, 100, 50)
    bands[:, 20:23] = 0
    good = write_geotiff(d / "good.tif", bands, nodata=0, compression=compression, **kwargs)
    path = d / "in" / name
    data = good.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    good.unlink()
    return path


def raw_tiff(d: Path, data: np.ndarray, name: str, **kwargs) -> Path:
    path = d / "in" / name
    tifffile.imwrite(path, data, **kwargs)
    return path


# --- the cases ------------------------------------------------------------------------------------------

def _missing(d):
    argv, outs = fill(d, d / "in" / "missing.tif")
    return argv, outs, "missing.tif: no such file"


def _bytes_case(name: str, content: bytes, token: str):
    def build(d):
        path = d / "in" / name
        path.write_bytes(content)
        argv, outs = fill(d, path)
        return argv, outs, f"{name}: {token}"
    return build


def _folder_case(d):
    (d / "in" / "notes").mkdir()
    (d / "in" / "notes" / "readme.txt").write_text("hello")
    argv, outs = fill(d, d / "in" / "notes")
    return argv, outs, "notes: no Landsat band files"


def _dir_named_tif(d):
    (d / "in" / "dir.tif").mkdir()
    argv, outs = fill(d, d / "in" / "dir.tif")
    return argv, outs, "dir.tif: no Landsat band files"


def _truncated_case(compression, fraction=0.6, **kwargs):
    def build(d):
        path = truncated(d, compression, fraction, **kwargs)
        argv, outs = fill(d, path)
        return argv, outs, "t.tif: the TIFF is"
    return build


def _corrupt_deflate(d):
    bands = smooth(1, 300, 300, np.uint8, 100, 50)
    bands[:, 20:23] = 0
    path = write_geotiff(d / "in" / "z.tif", bands, nodata=0, compression="zlib", rowsperstrip=32)
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[3], tif.pages[0].databytecounts[3]
    data = bytearray(path.read_bytes())
    data[offset + 2: offset + count] = bytes(count - 2)  # a strip's deflate stream zeroed: does not decode
    path.write_bytes(bytes(data))
    argv, outs = fill(d, path)
    return argv, outs, "z.tif: the TIFF is damaged"


def _complex(dtype):
    def build(d):
        path = raw_tiff(d, (smooth(1, dtype=np.float64)[0] + 1j).astype(dtype), "c.tif")
        argv, outs = fill(d, path)
        return argv, outs, "c.tif: complex pixels"
    return build


def _int64_beyond(d):
    # a wide spread (float32 keeps its detail) of values float64 cannot hold exactly (the + 1 near 2⁶⁰)
    path = write_geotiff(d / "in" / "i.tif", (smooth(1, dtype=np.float64).astype(np.int64) << 50) + 1)
    mask = gap_mask(d / "in" / "m.tif")
    argv, outs = fill(d, path, "--mask", mask)
    return argv, outs, "i.tif: a float64 output would change"


def _float64_as_float32(d):
    path = write_geotiff(d / "in" / "f.tif", smooth(2, dtype=np.float64, offset=1000.0) + np.pi * 1e-7)
    argv, outs = fill(d, path, "--mask", gap_mask(d / "in" / "m.tif"), "--dtype", "float32")
    return argv, outs, "f.tif: a float32 output would change"


def _all_nodata(d):
    path = write_geotiff(d / "in" / "blank.tif", np.zeros((1, 40, 40), np.uint8), nodata=0)
    argv, outs = fill(d, path)
    return argv, outs, "blank.tif: every pixel is nodata"


def _huge(method, with_variance):
    def build(d):
        rng = np.random.default_rng(0)
        bands = rng.uniform(-3e38, 3e38, (1, 64, 96)).astype(np.float32)
        bands[:, 20:23] = np.nan
        path = write_geotiff(d / "in" / "huge.tif", bands)
        argv, outs = fill(d, path, method=method)
        if with_variance:
            argv += ["--variance", str(d / "out" / "v.tif"), "--device", "cpu"]
            outs.append(d / "out" / "v.tif")
        return argv, outs, "huge.tif: " + ("its values span" if with_variance else "the harmonic fill gave")
    return build


def _band_without_data(d):
    bands = smooth(2, dtype=np.float32)
    bands[1] = np.nan
    bands[0, 20:23] = np.nan
    path = write_geotiff(d / "in" / "nanband.tif", bands)
    argv, outs = fill(d, path, "--mask", gap_mask(d / "in" / "m.tif"))
    return argv, outs, "nanband.tif: band 2 has no known pixels"


def _four_d(d):
    path = raw_tiff(d, np.ones((2, 3, 20, 20), np.uint8), "cube.tif", photometric="minisblack")
    argv, outs = fill(d, path)
    return argv, outs, "cube.tif: cannot read an image with axes"


def _mask_case(make_mask, token):
    def build(d):
        src = scene_file(d)
        mask = write_geotiff(d / "in" / "m.tif", make_mask())
        argv, outs = fill(d, src, "--mask", mask)
        return argv, outs, token
    return build


def _mask_elsewhere(tie_point=(0.0, 0.0, 0.0, 530000.0, 4000000.0, 0.0), epsg=32633):
    """A mask of the scene's size whose georeferencing puts it somewhere else (or in another coordinate system)."""
    def build(d):
        src = scene_file(d)
        tags = [(33550, "d", 3, (30.0, 30.0, 0.0), True), (33922, "d", 6, tie_point, True),
                (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg), True)]
        mask = write_geotiff(d / "in" / "m.tif", np.ones((1, 64, 96), np.uint8), geo=False, extratags=tags)
        argv, outs = fill(d, src, "--mask", mask)
        return argv, outs, "m.tif: the mask"
    return build


def _no_gaps(d):
    path = write_geotiff(d / "in" / "full.tif", smooth(2))
    argv, outs = fill(d, path)
    return argv, outs, "full.tif: no gaps detected"


def _one_pixel(d):
    path = write_geotiff(d / "in" / "px.tif", np.full((1, 1, 1), 7, np.uint8))
    argv, outs = fill(d, path)
    return argv, outs, "px.tif: no gaps detected"


def _mismatched_product(d):
    folder = product(d / "in" / "LE07_product")
    write_geotiff(next(folder.glob("*_B2.TIF")), np.ones((1, 30, 96), np.uint8))
    argv, outs = fill(d, folder, "--mask", gap_mask(d / "in" / "m.tif"))
    return argv, outs, "_B2.TIF: band B2 is 96×30 pixels"


def _bad_geokeys(d):
    keys = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 70000)  # not 16-bit keys
    bands = smooth(1)
    bands[:, 20:23] = 0
    path = write_geotiff(d / "in" / "keys.tif", bands, nodata=0, geo=False,
                         extratags=[(34735, "I", len(keys), keys, True)])
    argv, outs = fill(d, path)
    return argv, outs, "keys.tif: the source's GeoKeyDirectory"


def _nodata_text(d):
    bands = smooth(1)
    bands[:, 20:23] = 0
    path = write_geotiff(d / "in" / "nd.tif", bands, nodata="none")
    argv, outs = fill(d, path)
    return argv, outs, "nd.tif: no gaps detected"


def _out_is(which):
    def build(d):
        src = scene_file(d)
        mask = gap_mask(d / "in" / "m.tif")
        target = {"input": src, "mask": mask}[which]
        argv, _ = fill(d, src, "--mask", mask, out=target)
        return argv, [_sidecar(target)], f"{target.name}: refusing to overwrite"
    return build


def _out_is_band_file(d):
    folder = product(d / "in" / "LE07_product")
    band = next(folder.glob("*_B1.TIF"))
    argv, _ = fill(d, folder, "--mask", gap_mask(d / "in" / "m.tif"), out=band)
    return argv, [_sidecar(band)], "_B1.TIF: refusing to overwrite"


def _out_link(kind):
    def build(d):
        src = scene_file(d)
        link = d / "out" / "link.tif"
        (os.symlink if kind == "symlink" else os.link)(src, link)
        argv, _ = fill(d, src, "--mask", gap_mask(d / "in" / "m.tif"), out=link)
        return argv, [_sidecar(link)], "link.tif: refusing to overwrite"
    return build


def _out_path(make_out, token):
    def build(d):
        src = scene_file(d)
        out = make_out(d)
        argv, outs = fill(d, src, out=out)
        return argv, outs if not out.is_dir() else [_sidecar(out)], token
    return build


def _blocker(d):
    (d / "out" / "afile").write_text("x")
    return d / "out" / "afile" / "o.tif"


def _existing_dir(d):
    (d / "out" / "o.tif").mkdir()
    return d / "out" / "o.tif"


def _variance_on(which):
    def build(d):
        src = scene_file(d)
        out = d / "out" / "o.tif"
        target = {"out": out, "sidecar": _sidecar(out), "input": src}[which]
        argv, outs = fill(d, src, "--variance", target, method="convnp")
        return argv, outs + ([target] if which != "input" else []), target.name
    return build


def _option(*extra, token, method="idw"):
    def build(d):
        src = scene_file(d)
        argv, outs = fill(d, src, *extra, method=method)
        return argv, outs, token
    return build


def _many(*extra, token, scenes=("s.tif",), corrupt=(), out_dir="many_out"):
    def build(d):
        for name in scenes:
            scene_file(d, name, c=1)
        for name in corrupt:
            (d / "in" / name).write_bytes(b"II*\x00 not really a tiff")
        out = d / out_dir if out_dir else d / "in"
        argv = ["fill-many", str(d / "in"), "--out-dir", str(out), "--method", "idw", *extra]
        outs = [out / f"{Path(n).stem}_idw.tif" for n in corrupt]
        return argv, outs, token
    return build


def _many_out_dir_is_file(d):
    scene_file(d)
    (d / "out" / "f").write_text("x")
    argv = ["fill-many", str(d / "in"), "--out-dir", str(d / "out" / "f"), "--method", "idw"]
    return argv, [], "f: the output folder"


def _many_output_is_input(d):
    scene_file(d, "x.tif", c=1)
    scene_file(d, "x_idw.tif", c=1)
    argv = ["fill-many", str(d / "in" / "x.tif"), str(d / "in" / "x_idw.tif"), "--out-dir", str(d / "in"),
            "--method", "idw"]
    return argv, [], "x.tif: its output"


def _evaluate(kind):
    def build(d):
        data = d / "in" / "data"
        if kind == "missing":
            return ["evaluate", "--data", str(data)], [], "data: --data is not a folder"
        if kind == "empty":
            data.mkdir()
            return ["evaluate", "--data", str(data)], [], "mask_slc1.tif: missing from --data"
        fake_evaluate_data(data)
        if kind == "weights":
            weights = d / "in" / "w.pt"
            weights.write_bytes(np.random.default_rng(0).bytes(500))
            return ["evaluate", "--data", str(data), *EVALUATE_SETS, "--weights", str(weights)], [], "w.pt: not usable"
        if kind == "json-is-weights":  # the checkpoint given as --weights and --json: never replaced by scores
            from napari_convnp.model import WEIGHTS

            weights = d / "in" / "w.pt"
            weights.write_bytes(Path(WEIGHTS).read_bytes())
            return (["evaluate", "--data", str(data), *EVALUATE_SETS, "--weights", str(weights), "--json",
                     str(weights)], [], "--json: " + str(weights) + ": refusing to overwrite the input file")
        if kind == "json-in-data":  # a benchmark file given as --json
            target = data / "benchmark" / "sts-cnn" / "mask_slc1.tif"
            return (["evaluate", "--data", str(data), *EVALUATE_SETS, "--json", str(target)], [],
                    "--json lies inside --data")
        out = d / "out" / "no" / "s.json"
        return ["evaluate", "--data", str(data), *EVALUATE_SETS, "--json", str(out)], [out], "--json"
    return build


def _foreign_sidecar(d):
    """OUT_filled_mask.tif exists and is not a mask this package wrote: never replaced by a fill of OUT."""
    src = scene_file(d)
    out = d / "in" / "o.tif"
    write_geotiff(_sidecar(out), smooth(1))  # counted as an input: its hash must not change
    argv, _ = fill(d, src, out=out)
    return argv, [out], "o_filled_mask.tif: it exists and is not a filled-pixel mask written by napari-convnp"


def _reference_with_single_image_method(d):
    src = scene_file(d)
    ref = scene_file(d, "r.tif")
    argv, outs = fill(d, src, "--reference", ref, method="harmonic")
    return argv, outs, "--reference: method 'harmonic' fills from the scene alone and would ignore the reference"


def _train_out_is_last(d):
    out = d / "out" / "w.pt"
    return ["train", "--data", str(d / "in"), "--out", str(out), "--last", str(out)], [out], \
        "--out and --last name one file"


def _train_out(d):
    out = d / "out" / "no" / "w.pt"
    return ["train", "--data", str(d / "in"), "--out", str(out), "--steps", "1"], [out], "--out"


def _train(*extra, token, init=False, junk_init=False):
    def build(d):
        out = d / "out" / "w.pt"
        argv = ["train", "--data", str(d / "in"), "--out", str(out), *extra]
        if junk_init:
            junk = d / "in" / "junk.pt"
            junk.write_bytes(b"\x00\x01 not a checkpoint")
            argv += ["--init", str(junk)]
        if init:  # a copy of the shipped weights as the checkpoint to start from, and as --out
            from napari_convnp.model import WEIGHTS

            out = d / "in" / "init.pt"
            out.write_bytes(Path(WEIGHTS).read_bytes())
            argv = ["train", "--data", str(d / "in"), "--out", str(out), "--init", str(out)]
        return argv, [] if init else [out], token
    return build


def _offset_uint32(d):
    bands = smooth(2).astype(np.uint32) + np.uint32(4_000_000_000)
    bands[:, 20:23] = 0
    src = write_geotiff(d / "in" / "u32.tif", bands, nodata=0)
    argv, outs = fill(d, src)
    return argv, outs, "u32.tif: band 1's values lie between"


def _signal_fill(d):
    bands = smooth(3, 1536, 1536)  # several seconds of work, every tile has gaps: not done when the signal comes
    for row in range(100, 1536, 200):
        bands[:, row:row + 6] = 0
    src = write_geotiff(d / "in" / "big.tif", bands, nodata=0)
    argv, outs = fill(d, src, "--variance", d / "out" / "v.tif", "--device", "cpu", method="convnp")
    return argv, outs + [d / "out" / "v.tif"], "big.tif: "


def _signal_many(d):
    for name in ("a.tif", "b.tif"):  # no scene is done when the signal comes (~15 s each): every tile has gaps
        bands = smooth(3, 2560, 2560)
        for row in range(100, 2560, 200):
            bands[:, row:row + 6] = 0
        write_geotiff(d / "in" / name, bands, nodata=0)
    out = d / "many_out"
    argv = ["fill-many", str(d / "in"), "--out-dir", str(out), "--workers", "1", "--device", "cpu"]
    return argv, [out / "a_convnp.tif", out / "b_convnp.tif"], "many_out: "


def _empty_mask():
    return np.zeros((1, 64, 96), np.uint8)


def _full_mask():
    return np.ones((1, 64, 96), np.uint8)


CASES = [
    # file kinds
    Case("missing-file", _missing, tags=("file",)),
    Case("empty-file", _bytes_case("e.tif", b"", "the file is empty"), tags=("file",)),
    Case("text-as-tif", _bytes_case("t.tif", b"hello, this is text\n" * 20, "not a readable TIFF"), tags=("file",)),
    Case("png-suffix", _bytes_case("p.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "not a GeoTIFF"), tags=("file",)),
    Case("garbage-after-magic", _bytes_case("g.tif", b"II*\x00" + bytes(range(256)) * 4, "not a readable TIFF"),
         tags=("file",)),
    Case("bigtiff-garbage", _bytes_case("b.tif", b"II+\x00\x08\x00\x00\x00" + b"\xff" * 64, "not a readable TIFF"),
         tags=("file",)),
    Case("folder-without-bands", _folder_case, tags=("file",)),
    Case("folder-named-tif", _dir_named_tif, tags=("file",)),
    # codecs and truncation
    Case("truncated-deflate", _truncated_case("zlib", rowsperstrip=32), tags=("codec", "truncation")),
    Case("truncated-zstd", _truncated_case("zstd", rowsperstrip=32), tags=("codec", "truncation")),
    Case("truncated-packbits", _truncated_case("packbits", rowsperstrip=32), tags=("codec", "truncation")),
    Case("truncated-lzw", _truncated_case("lzw", rowsperstrip=32), tags=("codec", "truncation")),
    Case("truncated-jpeg-strips", _truncated_case("jpeg", rowsperstrip=32), tags=("codec", "truncation")),
    Case("truncated-jpeg-grey-rows", _truncated_case("jpeg", 0.95), tags=("codec", "truncation")),
    Case("truncated-uncompressed", _truncated_case(None, rowsperstrip=32), tags=("truncation",)),
    Case("truncated-tiled-deflate", _truncated_case("zlib", 0.7, tile=(64, 64)), tags=("codec", "truncation")),
    Case("corrupt-deflate-stream", _corrupt_deflate, tags=("codec",)),
    # dtypes
    Case("complex64", _complex(np.complex64), tags=("dtype",)),
    Case("complex128", _complex(np.complex128), tags=("dtype",)),
    Case("int64-beyond-float64", _int64_beyond, tags=("dtype",)),
    Case("float64-as-float32", _float64_as_float32, tags=("dtype",)),
    Case("all-nodata", _all_nodata, tags=("dtype",)),
    Case("uint32-large-offset", _offset_uint32, tags=("dtype",)),
    Case("huge-values-variance", _huge("convnp", True), tags=("dtype",)),
    Case("huge-values-harmonic", _huge("harmonic", False), tags=("dtype",)),
    Case("band-without-data", _band_without_data, tags=("dtype",)),
    # shapes
    Case("four-dimensional", _four_d, tags=("shape",)),
    Case("mask-wrong-size", _mask_case(lambda: np.ones((1, 10, 10), np.uint8), "m.tif: the mask is 10×10"),
         tags=("shape",)),
    Case("mask-wrong-bands", _mask_case(lambda: np.ones((3, 64, 96), np.uint8), "m.tif: mask has 3 bands"),
         tags=("shape",)),
    Case("mask-elsewhere", _mask_elsewhere(), tags=("shape",)),
    Case("mask-other-coordinate-system", _mask_elsewhere(epsg=32634), tags=("shape",)),
    Case("mask-empty", _mask_case(_empty_mask, "m.tif: the mask is empty"), tags=("shape",)),
    Case("mask-covers-everything", _mask_case(_full_mask, "s.tif: the mask covers every pixel"), tags=("shape",)),
    Case("no-gaps", _no_gaps, tags=("shape",)),
    Case("one-pixel", _one_pixel, tags=("shape",)),
    Case("product-bands-differ", _mismatched_product, tags=("shape",)),
    # tags
    Case("geokeys-not-16-bit", _bad_geokeys, tags=("tags",)),
    Case("nodata-text-garbage", _nodata_text, tags=("tags",)),
    # output paths
    Case("out-is-input", _out_is("input"), tags=("path",)),
    Case("out-is-mask", _out_is("mask"), tags=("path",)),
    Case("out-is-landsat-band", _out_is_band_file, tags=("path",)),
    Case("out-symlink-to-input", _out_link("symlink"), tags=("path",)),
    Case("out-hardlink-to-input", _out_link("hardlink"), tags=("path",)),
    Case("out-parent-is-file", _out_path(_blocker, "afile is a file"), tags=("path",)),
    Case("out-is-existing-folder", _out_path(_existing_dir, "o.tif: the output is an existing folder"),
         tags=("path",)),
    Case("out-folder-missing", _out_path(lambda d: d / "out" / "nope" / "o.tif", "o.tif: its folder"),
         tags=("path",)),
    Case("out-under-sys", _out_path(lambda d: Path("/sys/napari_convnp_test.tif"),
                                    "napari_convnp_test.tif: cannot write"),
         tags=("path",)),
    Case("out-not-tif", _out_path(lambda d: d / "out" / "o.png", "o.png: output must be"), tags=("path",)),
    Case("variance-is-out", _variance_on("out"), tags=("path",)),
    Case("variance-is-filled-mask", _variance_on("sidecar"), tags=("path",)),
    Case("variance-is-input", _variance_on("input"), tags=("path",)),
    # options
    Case("seed-negative", _option("--seed", "-1", "--density", "0.5", token="seed must be"), tags=("option",)),
    Case("seed-not-a-number", _option("--seed", "x", token="--seed"), tags=("option",)),
    Case("density-zero", _option("--density", "0", token="density must be"), tags=("option",)),
    Case("density-nan", _option("--density", "nan", token="density must be"), tags=("option",)),
    Case("density-above-one", _option("--density", "1.5", token="density must be"), tags=("option",)),
    Case("tile-zero", _option("--tile", "0", token="tile must be"), tags=("option",)),
    Case("harmonic-with-variance", _option("--variance", "VAR", token="gives no variance", method="harmonic"),
         tags=("option",)),
    Case("unknown-method", _option(token="--method", method="bogus"), tags=("option",)),
    Case("unknown-dtype", _option("--dtype", "int8", token="--dtype"), tags=("option",)),
    Case("adapt-steps-negative", _option("--adapt-steps", "-1", method="convnp",
                                         token="--adapt: adaptation steps must be a whole number from 0"),
         tags=("option",)),
    Case("adapt-steps-without-convnp", _option("--adapt-steps", "2",
                                               token="--adapt: adaptation fine-tunes the ConvNP"),
         tags=("option",)),
    Case("adapt-steps-beyond-int64", _option("--adapt", "9223372036854775808", method="convnp",
                                             token="--adapt: adaptation steps must be a whole number from 0 to"),
         tags=("option",)),
    Case("adapt-steps-30-digits", _option("--adapt", "1" + "0" * 29, method="convnp",
                                          token="--adapt: adaptation steps must be a whole number from 0 to"),
         tags=("option",)),
    Case("biharmonic-weight-minus-inf", _option("--biharmonic-weight", "-inf", method="convnp",
                                                token="--biharmonic-weight: the biharmonic weight must be a number"),
         tags=("option",)),
    Case("invert-mask-without-mask", _option("--invert-mask", token="--invert-mask turns a mask round"),
         tags=("option",)),
    Case("reference-with-single-image-method", _reference_with_single_image_method, tags=("option",)),
    Case("out-beside-foreign-sidecar", _foreign_sidecar, tags=("path",)),
    Case("many-workers-zero", _many("--workers", "0", token="--workers must be 1 or more"), tags=("option",)),
    Case("many-workers-negative", _many("--workers", "-1", token="--workers must be 1 or more"), tags=("option",)),
    Case("many-scheduler-unreachable", _many("--scheduler", "tcp://127.0.0.1:1",
                                             token="tcp://127.0.0.1:1: cannot reach the Dask scheduler"),
         tags=("option",)),
    Case("many-scheduler-not-an-address", _many("--scheduler", "garbage",
                                                token="garbage: cannot reach the Dask scheduler"), tags=("option",)),
    Case("many-out-dir-is-file", _many_out_dir_is_file, tags=("path",)),
    Case("many-one-corrupt-scene", _many("--workers", "1", token="bad.tif: not a readable TIFF",
                                         corrupt=("bad.tif",)), code=1, tags=("file",)),
    Case("many-output-is-an-input", _many_output_is_input, code=1, tags=("path",)),
    Case("evaluate-missing-data", _evaluate("missing"), tags=("path",)),
    Case("evaluate-empty-data", _evaluate("empty"), tags=("path",)),
    Case("evaluate-garbage-weights", _evaluate("weights"), tags=("file",)),
    Case("evaluate-json-folder-missing", _evaluate("json"), tags=("path",)),
    Case("evaluate-json-is-weights", _evaluate("json-is-weights"), tags=("path",)),
    Case("evaluate-json-in-data", _evaluate("json-in-data"), tags=("path",)),
    Case("train-out-is-last", _train_out_is_last, tags=("path",)),
    Case("train-out-folder-missing", _train_out, tags=("path",)),
    Case("train-minutes-negative", _train("--minutes", "-1", token="--minutes must be a positive"),
         tags=("option",)),
    Case("train-steps-zero", _train("--steps", "0", token="--steps must be 1 or more"), tags=("option",)),
    Case("train-init-not-weights", _train(token="junk.pt: not usable ConvNP weights", junk_init=True),
         tags=("file",)),
    Case("train-out-is-init", _train(token="--out is the --init checkpoint", init=True), tags=("path",)),
    # signals
    Case("sigint-fill", _signal_fill, code=130, signal=signal.SIGINT, tags=("signal",)),
    Case("sigterm-fill", _signal_fill, code=143, signal=signal.SIGTERM, tags=("signal",)),
    Case("sigint-fill-many", _signal_many, code=130, signal=signal.SIGINT, tags=("signal",)),
]


def _run(case: Case, root: Path) -> dict:
    d = root / case.id
    (d / "in").mkdir(parents=True)
    (d / "out").mkdir()
    argv, outputs, token = case.build(d)
    argv = [str(d / "out" / "v.tif") if a == "VAR" else a for a in argv]
    before = _hashes(d / "in")
    start = time.monotonic()
    if case.signal is None:
        proc = subprocess.run(CLI + argv, capture_output=True, text=True, timeout=240, cwd=d)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        code, out, err = _interrupt(argv, case.signal, d)
    after = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).is_file() else None for p in before}
    return {"code": code, "stdout": out, "stderr": err, "token": token, "outputs": outputs, "before": before,
            "after": after, "seconds": time.monotonic() - start, "dirs": {p.parent for p in outputs}}


def _interrupt(argv, sig, cwd) -> tuple[int, str, str]:
    """Start the command, wait until it runs its own code (numpy loaded: its handlers are in place) and a
    bit into the work, then signal it."""
    # SIGINT as at a terminal, even where this suite runs as a background job (whose children ignore SIGINT,
    # which the command rightly leaves ignored)
    proc = subprocess.Popen(CLI + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "numpy" in Path(f"/proc/{proc.pid}/maps").read_text():
                break
        except OSError:
            pass
        time.sleep(0.02)
    time.sleep(1.5 if "fill-many" not in argv else 4.0)
    assert proc.poll() is None, "the command ended before it could be interrupted"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _hashes(folder: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    quick = [c for c in CASES if c.signal is None]
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(zip((c.id for c in quick), pool.map(lambda c: _run(c, root), quick)))
    for case in CASES:  # signals: one at a time, timing matters
        if case.signal is not None:
            done[case.id] = _run(case, root)
    return done


def test_the_suite_covers_every_kind_of_bad_input():
    kinds = {tag for case in CASES for tag in case.tags}
    assert {"file", "codec", "truncation", "dtype", "shape", "tags", "path", "option", "signal"} <= kinds
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, results):
    r = results[case.id]
    lines = [line for line in r["stderr"].splitlines() if line.strip()]
    assert r["code"] == case.code, r["stderr"]
    assert len(lines) == case.lines, r["stderr"]
    assert all(line.startswith("napari-convnp: error: ") for line in lines), r["stderr"]
    assert r["token"] in r["stderr"], r["stderr"]
    assert "Traceback" not in r["stderr"] + r["stdout"]
    assert r["after"] == r["before"], "an input changed"
    assert not [p for p in r["outputs"] if os.path.lexists(p) and not Path(p).is_dir()], "an output was written"
    partials = [p for folder in r["dirs"] if folder.is_dir() and os.access(folder, os.W_OK)
                for p in folder.glob(".*.partial")]
    assert not partials, "a temporary file was left behind"
    if case.id == "many-scheduler-unreachable":
        assert r["seconds"] < 30  # a short connect timeout, not a hang
