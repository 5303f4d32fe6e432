"""Any single-band (or per-band) file read as a mask of pixels to fill, and a Landsat product's own gap masks.

A mask file marks its pixels by one rule: nonzero (the default), a list of values, bit numbers that are set,
or the clouds and cloud shadows of a quality band (QA_PIXEL, BQA, Fmask; decoded by `qa.py`); `invert`
marks the other known pixels. The file's nodata (NaN) is never marked. Used by `fileio` (the CLI's --mask)
and by the napari reader; numpy only, no napari.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import qa
from .errors import MaskError, OptionError
from .landsat import BAND_FILE, GAP_MASK_NAME, MASK_NAME, gap_mask_files
from .scene import Scene, read_scene
from .tiffread import read_tiff

MASK_DTYPES = frozenset(np.dtype(t) for t in ("bool", "uint8", "uint16"))
MAX_BIT = 31
QA_LAYOUTS = ("qa_pixel", "bqa", "fmask")  # the layouts of qa.py whose clouds a mask can mark


def check_rule(values=None, bits=None, qa_kind: str | None = None) -> None:
    """OptionError for a mask rule that cannot work: more than one rule, no values or bits, bits outside 0–31,
    an unknown quality layout."""
    given = [name for name, rule in (("values", values), ("bits", bits), ("qa", qa_kind)) if rule is not None]
    if len(given) > 1:
        raise OptionError(f"mask: give one rule, not {' and '.join(given)}")
    if values is not None and not _numbers(values, lambda v: np.isfinite(v)):
        raise OptionError(f"mask values: {values!r} must be one or more finite numbers")
    if bits is not None and not _numbers(bits, lambda b: b.is_integer() and 0 <= b <= MAX_BIT):
        raise OptionError(f"mask bits: {bits!r} must be one or more bit numbers 0–{MAX_BIT}")
    if qa_kind is not None and qa_kind not in QA_LAYOUTS:
        raise OptionError(f"mask qa: '{qa_kind}' is not a quality band layout (choose one of {', '.join(QA_LAYOUTS)})")


def _numbers(items, ok) -> bool:
    """Whether `items` are one or more numbers that each pass `ok`."""
    try:
        numbers = [float(item) for item in items]
    except (TypeError, ValueError):
        return False
    return bool(numbers) and all(ok(n) for n in numbers)


def describe_rule(values=None, bits=None, qa_kind: str | None = None, invert: bool = False) -> str:
    """The rule in words, for messages: 'nonzero = fill', 'values 0, 2 = fill', …"""
    if values is not None:
        rule = f"value{'s' if len(values) > 1 else ''} {', '.join(f'{v:g}' for v in map(float, values))}"
    elif bits is not None:
        rule = f"bit{'s' if len(bits) > 1 else ''} {', '.join(str(int(b)) for b in bits)} set"
    elif qa_kind is not None:
        rule = f"{qa_kind} clouds and shadows"
    else:
        rule = "nonzero"
    return f"not {rule} = fill" if invert else f"{rule} = fill"


def mask_from_scene(mask_scene: Scene, *, values=None, bits=None, qa_kind: str | None = None,
                    invert: bool = False) -> np.ndarray:
    """C×H×W bool of the pixels a mask file (read as a scene) marks, band by band (no float copy of the whole)."""
    check_rule(values, bits, qa_kind)
    path = mask_scene.path
    out = np.zeros(mask_scene.shape, bool)
    for b, band in enumerate(mask_scene.bands):
        known = ~np.isnan(band)
        if values is not None:
            marked = np.isin(band, np.asarray(values, np.float32))
        elif bits is not None:
            whole = band[known]
            if whole.size and (whole.min() < 0 or np.any(whole != np.round(whole))):
                bad = whole[(whole < 0) | (whole != np.round(whole))][0]
                raise MaskError(f"{path}: value {bad:g} has no bits (mask bits need whole numbers ≥ 0)")
            flags = np.where(known, band, 0).astype(np.uint64)
            marked = (flags & np.uint64(sum(1 << int(bit) for bit in bits))) != 0
        elif qa_kind is not None:
            marked = qa.decode(band, qa_kind, f"{path} band {b + 1}")[1]
        else:
            marked = band != 0
        out[b] = (~marked if invert else marked) & known
    return out


def read_mask(path: str | os.PathLike, *, values=None, bits=None, qa_kind: str | None = None,
              invert: bool = False) -> tuple[np.ndarray, Scene]:
    """(C×H×W bool mask, the file read as a scene for its georeferencing) of a mask file by a rule."""
    check_rule(values, bits, qa_kind)
    mask_scene = read_scene(path, lazy_float=True)
    return mask_from_scene(mask_scene, values=values, bits=bits, qa_kind=qa_kind, invert=invert), mask_scene


def rule_for_name(name: str) -> dict:
    """The rule a file's name announces: a quality band's clouds (QA_PIXEL, BQA, Fmask), a USGS gap mask's 0
    (gap), else none (nonzero)."""
    kind = qa.kind_from_name(name)
    if kind is not None:
        return {"qa_kind": kind}
    return {"values": [0]} if GAP_MASK_NAME.search(name) else {}


def is_mask_file(path: str | os.PathLike) -> bool:
    """A file named like a mask (*GM_B*, *mask*, *QA_PIXEL*, *BQA*, *fmask*) holding 8- or 16-bit unsigned integers
    (or booleans): a mask or quality band, not a scene."""
    path = Path(path)
    if not MASK_NAME.search(path.name) or path.is_dir():
        return False
    try:
        return read_tiff(path, pixels=False)["dtype"] in MASK_DTYPES
    except Exception:  # noqa: BLE001 - unreadable: the scene reader then names the problem
        return False


def product_gap_mask(scene) -> np.ndarray | None:
    """The product's own gap masks for `scene` (C×H×W bool, True where the product says gap or off the scene,
    its 0s), or None where the product ships none that fit the scene: per band (`*_GM_B<n>.TIF` matched by band
    name, or by the band file's name for a one-band file), or one file of the scene's shape (or one band)."""
    if getattr(scene, "path", None) is None:
        return None
    files = gap_mask_files(scene.path)
    per_band = {m.group(1).upper(): f for f in files if (m := GAP_MASK_NAME.search(f.name)) and m.group(1)}
    keys = [name.upper() for name in scene.band_names]
    own = BAND_FILE.search(Path(scene.path).name)
    if len(keys) == 1 and own:
        keys = [own.group(1).upper()]
    if per_band and all(key in per_band for key in keys):
        parts = [_zeros(per_band[key]) for key in keys]
        if all(part.shape == (1, *scene.shape[1:]) for part in parts):
            return np.concatenate(parts)
    for f in files:
        if f in per_band.values():
            continue
        gaps = _zeros(f)
        if gaps.shape == tuple(scene.shape) or gaps.shape == (1, *scene.shape[1:]):
            return np.broadcast_to(gaps, scene.shape)
    return None


def _zeros(path: Path) -> np.ndarray:
    """A gap mask's 0s (gap or off the scene), C×H×W bool."""
    gaps = read_scene(path, lazy_float=True)
    return np.stack([band == 0 for band in gaps.bands])
