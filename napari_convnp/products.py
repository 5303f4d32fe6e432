"""What a Landsat product says about its files, by their names and the files beside them: whether an untagged 0
is the product's fill, and which files are its own gap masks.

USGS Level-1 and Level-2 bands store fill as 0 and say so only in their documentation, not in a nodata tag;
Landsat 7 SLC-off products ship a gap mask per band (`gap_mask/*_GM_B<n>.TIF`, 0 = gap or off the scene).
Paths only, no pixel is read here: `scene.py` asks while it reads a band, `maskfile.py` reads the gap masks.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# Collection 1/2 product IDs: LE07_L1TP_092084_20110809_20161206_01_T1 (the first date is the acquisition)
PRODUCT_ID = re.compile(r"(?<![A-Za-z0-9])L[COTEM]0\d_[A-Z0-9]{4}_\d{6}_(\d{4})(\d{2})(\d{2})(?!\d)", re.IGNORECASE)
# Older scene IDs: LE70350322008118EDC00 = sensor, path 035, row 032, year 2008, day of year 118, station, version
SCENE_ID = re.compile(r"(?<![A-Za-z0-9])L[COTEM]\d\d{6}(\d{4})(\d{3})[A-Z]{3}\d{2}(?![A-Za-z0-9])", re.IGNORECASE)
# Files of masks or quality flags, not of the surface: their 0 is a value (a gap, a clear pixel), never fill.
MASK_NAME = re.compile(r"(?i)_GM_B\d|mask|qa_pixel|(?<![a-z])bqa(?![a-z])|qa_radsat|sr_qa|st_qa")
# A product's own gap masks: *_GM_B1.TIF (per band, in gap_mask/ or beside the bands), or a file named gapmask
GAP_MASK_NAME = re.compile(r"(?i)_GM_(B\d{1,2}(?:_VCID_\d)?)\.tiff?$|gap_?mask[^/]*\.tiff?$")


def product_id(path: str | Path) -> str | None:
    """The Landsat product or scene ID in the name of `path` or of its folder, upper case, or None."""
    path = Path(path)
    for name in (path.name, path.parent.name):
        found = PRODUCT_ID.search(name) or SCENE_ID.search(name)
        if found:
            return found.group(0).upper()
    return None


def mtl_files(path: str | Path) -> list[Path]:
    """The product's *_MTL.txt: inside a product folder, or beside a file whose name it begins."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        mtls = sorted(folder.glob("*_MTL.txt")) + sorted(folder.glob("*_MTL.TXT"))
    except OSError:
        return []
    if not path.is_dir():
        mtls = [m for m in mtls if path.name.upper().startswith(m.name[:-len("_MTL.txt")].upper())]
    return mtls


def gap_mask_files(path: str | Path) -> list[Path]:
    """The product's own gap masks for the scene read from `path`: for a product folder, its `gap_mask/*_GM_B<n>.TIF`
    (or those beside the bands); for a file, the gap masks in its folder (and its gap_mask/) that carry its
    product ID. None for a file without a product ID: whose masks they are cannot be told."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    found = []
    for place in (folder / "gap_mask", folder):
        try:
            found += sorted(f for f in place.iterdir() if GAP_MASK_NAME.search(f.name) and f.is_file())
        except OSError:
            continue
    if path.is_dir():
        return found
    own = product_id(path.name)
    return [f for f in found if own is not None and product_id(f.name) == own and f != path]


def zero_is_fill(path: str | Path, dtype) -> bool:
    """Whether an untagged 0 in the integer band file `path` is the product's fill: the file is a Landsat
    product's band (a product ID in its name or its folder's, an MTL beside it, or its gap masks) and not a mask
    or quality file. Never in float files or other files, where 0 may be dark water."""
    path = Path(path)
    if np.dtype(dtype).kind not in "ui" or MASK_NAME.search(path.name):
        return False
    return bool(product_id(path) or mtl_files(path) or gap_mask_files(path))
