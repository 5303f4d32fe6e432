"""Masks per date from the Landsat products' own quality bands: which pixels may never serve as context
(`unusable`) and which of them are clouds (`cloudy`, filled in a target only when the user asks).

Three layouts as USGS and Fmask document them, and a plain mask of the user's:
- `qa_pixel`: Collection 2 `QA_PIXEL` bit flags: bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud
  shadow, 5 snow (each set only at high confidence).
- `bqa`: Collection 1 `BQA`: bit 0 fill, bit 4 cloud, then two-bit confidences (0 not determined, 1 low,
  2 medium, 3 high): 5–6 cloud, 7–8 cloud shadow, 9–10 snow/ice, 11–12 cirrus; high confidence counts, as
  Collection 2's flags do.
- `fmask`: Fmask/CFmask classes: 0 clear land, 1 water, 2 cloud shadow, 3 snow, 4 cloud, 255 fill.
- `mask`: any nonzero value is a cloud (a cloud mask the user made).
Snow is unusable (it hides the surface a target shows on another day) but not cloudy: it is that day's
surface, so a target's snow is never filled. NaN in a quality band (its file's nodata) counts as fill.
numpy and scipy only.
"""
from __future__ import annotations

import re

import numpy as np
from scipy import ndimage

from .errors import MaskError, OptionError

QA_KINDS = ("qa_pixel", "bqa", "fmask", "mask")

# Collection 2 QA_PIXEL single-bit flags
C2_FILL, C2_DILATED_CLOUD, C2_CIRRUS, C2_CLOUD, C2_SHADOW, C2_SNOW = (1 << b for b in range(6))
# Collection 1 BQA: the fill and cloud bits, and the lowest bit of each two-bit confidence
C1_FILL, C1_CLOUD = 1 << 0, 1 << 4
C1_CLOUD_CONF, C1_SHADOW_CONF, C1_SNOW_CONF, C1_CIRRUS_CONF = 5, 7, 9, 11
HIGH_CONFIDENCE = 3
# Fmask / CFmask classes
FMASK_CLEAR, FMASK_WATER, FMASK_SHADOW, FMASK_SNOW, FMASK_CLOUD, FMASK_FILL = 0, 1, 2, 3, 4, 255

# What a band's or file's name says about its kind: *_QA_PIXEL.TIF, *_BQA.TIF, 'fmask', 'cfmask'
KIND_IN_NAME = (("qa_pixel", re.compile(r"(?i)qa_pixel")), ("bqa", re.compile(r"(?i)(?<![a-z])bqa(?![a-z])")),
                ("fmask", re.compile(r"(?i)(?<![a-z])c?fmask(?![a-z])")))


def kind_from_name(name: str) -> str | None:
    """The quality layout a band or file name announces ('qa_pixel', 'bqa', 'fmask'), or None."""
    for kind, pattern in KIND_IN_NAME:
        if pattern.search(name):
            return kind
    return None


def check_kind(kind: str) -> str:
    if kind not in QA_KINDS:
        raise OptionError(f"qa: '{kind}' is not a quality band kind (choose one of {', '.join(QA_KINDS)})")
    return kind


def decode(values: np.ndarray, kind: str, what: str = "quality band") -> tuple[np.ndarray, np.ndarray]:
    """(unusable, cloudy) H×W bool from a quality band's values; MaskError, naming `what`, for values its
    layout cannot hold (a negative or fractional flag word, a class Fmask does not have)."""
    check_kind(kind)
    values = np.asarray(values)
    fill = np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
    known = values[~fill]
    if kind == "mask":
        cloudy = ~fill & (np.nan_to_num(values) != 0)
        return cloudy | fill, cloudy
    if known.size and (known.min() < 0 or np.any(known != np.round(known)) or known.max() > 0xFFFF):
        bad = known[(known < 0) | (known != np.round(known)) | (known > 0xFFFF)][0]
        raise MaskError(f"{what}: value {bad:g} is not a {kind} value (whole numbers 0–65535)")
    flags = np.where(fill, 0, values).astype(np.uint16)
    if kind == "fmask":
        odd = ~fill & ~np.isin(flags, (FMASK_CLEAR, FMASK_WATER, FMASK_SHADOW, FMASK_SNOW, FMASK_CLOUD, FMASK_FILL))
        if odd.any():
            raise MaskError(f"{what}: value {int(flags[odd][0])} is not an Fmask class (0 clear, 1 water, "
                            "2 shadow, 3 snow, 4 cloud, 255 fill)")
        cloudy = ~fill & np.isin(flags, (FMASK_SHADOW, FMASK_CLOUD))
        snow = ~fill & (flags == FMASK_SNOW)
        fill |= flags == FMASK_FILL
    elif kind == "qa_pixel":
        cloudy = (flags & (C2_DILATED_CLOUD | C2_CIRRUS | C2_CLOUD | C2_SHADOW)) != 0
        snow = (flags & C2_SNOW) != 0
        fill |= (flags & C2_FILL) != 0
    else:
        def high(bit):
            return (flags >> bit) & 3 == HIGH_CONFIDENCE
        cloudy = ((flags & C1_CLOUD) != 0) | high(C1_CLOUD_CONF) | high(C1_SHADOW_CONF) | high(C1_CIRRUS_CONF)
        snow = high(C1_SNOW_CONF)
        fill |= (flags & C1_FILL) != 0
    cloudy &= ~fill
    return fill | cloudy | snow, cloudy


def date_masks(nodata: np.ndarray, quality: tuple[np.ndarray, np.ndarray] | None = None,
               dilate: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(unusable, cloudy) H×W for one date: the decoded quality band's verdict (if any) and every pixel that is
    nodata in some band, both grown by `dilate` pixels (USGS scenes carry interpolated pixels along the edges of
    SLC-off gaps, and cloud edges are often missed: users mask a margin)."""
    check_dilate(dilate)
    nodata = np.asarray(nodata)
    if nodata.ndim == 3:  # a band the date lacks altogether (OLI's B1 on a TM date) marks nothing
        nodata = nodata[[not band.all() for band in nodata]]
        unusable = nodata.any(axis=0) if len(nodata) else np.zeros(nodata.shape[1:], bool)
    else:
        unusable = nodata.astype(bool)
    cloudy = np.zeros(unusable.shape, bool)
    if quality is not None:
        unusable = unusable | quality[0]
        cloudy = quality[1].copy()
    if dilate:
        disk = _disk(int(dilate))
        unusable = ndimage.binary_dilation(unusable, disk)
        cloudy = ndimage.binary_dilation(cloudy, disk)
    return unusable, cloudy


def check_dilate(dilate) -> int:
    if not isinstance(dilate, (int, np.integer)) or isinstance(dilate, bool) or dilate < 0:
        raise OptionError(f"dilate: {dilate!r} is not a whole number of pixels ≥ 0")
    return int(dilate)


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius
