"""Another date of the same place ("reference") on the target's pixel grid.

A reference is read like any scene, put on the target's grid by its georeferencing (or pixel for
pixel when neither scene has any), and its bands matched to the target's by Landsat band number.
Pixels the reference does not know (outside its extent, its nodata and gaps) are NaN.
numpy only; knows nothing of torch or napari.
"""
from __future__ import annotations

import os
import re

import numpy as np

from .scene import BandWindows, Scene, SceneError, basic_index, index_span, read_scene

PIXEL_TOLERANCE = 0.01  # offsets within this many pixels of an integer count as on the grid
# pixel sizes count as the same where their difference, over the larger grid, adds up to less than this share of a
# pixel: two dates of one path and row differ by a few centimetres in 600 m (0.003 %), far under a pixel per scene
SIZE_TOLERANCE = 0.1
# A Landsat band number in a band name: B1, SR_B4, 'ETM+ B3 red', b5_swir1, B6_VCID_1 (not 'band 1').
BAND_NUMBER = re.compile(r"(?<![A-Za-z])B(\d{1,2})(?:_VCID_(\d))?(?!\d)", re.IGNORECASE)
# The sensor in a file or band name: a product name (LC08_…, LE07_…, LT05_…, LC8…, LE7…, L7ETM+, L8_…,
# landsat-8) or the instrument (OLI; ETM+, TM).
OLI_IN_NAME = re.compile(r"(?i)(?<![a-z0-9])(?:l[co]0?[89]|landsat[-_ ]?[89]|l[s]?[89])(?![0-9])"
                         r"|(?<![a-z0-9])l[co][89]\d{6}|\boli\b")
TM_IN_NAME = re.compile(r"(?i)(?<![a-z0-9])(?:l[etm]0?[4-7]|landsat[-_ ]?[4-7]|l[st]?[4-7])(?![0-9])"
                        r"|(?<![a-z0-9])l[etm][4-7]\d{6}|etm\+?|(?<![a-z])tm(?![a-z])")
# OLI (Landsat 8/9) bands as the TM/ETM+ band that sees the same light: B2-B7 are TM/ETM+ B1-B5, B7.
OLI_TO_TM = {2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 7}
# GeoKeys that only name or describe a CRS, not define it; RasterType is handled in _geotransform.
DESCRIPTIVE_KEYS = {1025, 1026, 2049, 3073}


def load_reference(item, target: Scene):
    """`item` (a GeoTIFF or Landsat folder path, a Scene, or an array already on the target's grid) as a
    C×H×W float32 array on the target's grid, NaN where unknown: for a path or a Scene an `AlignedReference`
    that cuts each window from the reference as it is read (a file read window by window too)."""
    if isinstance(item, (str, os.PathLike)):
        item = read_scene(item, lazy_float=True)
    if isinstance(item, Scene):
        return AlignedReference(target, item)
    array = np.asarray(item, dtype=np.float32)
    c, h, w = target.shape
    if array.ndim == 2 and c == 1:
        array = array[None]
    if array.shape != (c, h, w):
        raise SceneError(f"reference array: its shape {array.shape} is not the target {target.name}'s "
                         f"{(c, h, w)} (bands×rows×columns)")
    array = np.where(np.isfinite(array), array, np.nan).astype(np.float32)
    if np.isnan(array).all():
        raise SceneError("reference array: every pixel is unknown (NaN)")
    return array


def align_reference(target: Scene, ref: Scene) -> np.ndarray:
    """The reference's bands on the target's grid (C×H×W float32 in the target's band order), NaN where
    the reference is unknown; SceneError, naming the reference, where it cannot be aligned."""
    return np.asarray(AlignedReference(target, ref))


class AlignedReference(BandWindows):
    """A reference scene on the target's grid (C×H×W float32 in the target's band order, NaN where unknown),
    each window cut from the reference as the fill reads it: a whole scene's aligned copy is 1.3 GB. SceneError,
    naming the reference, where it cannot be aligned, does not overlap or has no valid pixel there."""

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, target: Scene, ref: Scene):
        name = str(ref.path) if ref.path else "reference"
        try:
            self.rows, self.cols = grid_offset(target, ref)
            self.pairs = match_bands(target, ref)
        except ValueError as err:
            raise SceneError(f"{name}: {err}") from None
        self.ref, self.shape = ref, tuple(target.shape)
        self.size = int(np.prod(self.shape))
        c, h, w = self.shape
        _, rh, rw = ref.shape
        if max(0, self.rows) >= min(h, self.rows + rh) or max(0, self.cols) >= min(w, self.cols + rw):
            raise SceneError(f"{name}: does not overlap the target {target.name} (it lies {self.rows:+d} rows, "
                             f"{self.cols:+d} columns away on a {rh}×{rw} grid against the target's {h}×{w})")
        if all(np.isnan(band).all() for band in self):  # band by band: no scene-sized temporaries
            raise SceneError(f"{name}: has no valid pixel where it overlaps the target {target.name} (all nodata)")

    def __getitem__(self, index) -> np.ndarray:
        picks = [range(n)[i] for n, i in zip(self.shape, basic_index(index, self.shape))]
        if any(isinstance(r, range) and r.step != 1 for r in picks[1:]):
            return self[:, :, :][index]  # strided rows or columns: rare; the whole, then numpy's indexing
        bands, (r0, r1), (c0, c1) = picks[0], *(index_span(r) for r in picks[1:])
        band_list = [bands] if isinstance(bands, int) else list(bands)
        out = np.full((len(band_list), r1 - r0, c1 - c0), np.nan, np.float32)
        _, rh, rw = self.ref.shape
        # the window's part covered by the reference, whose pixel (0, 0) sits at target (rows, cols)
        t0, t1 = max(r0, self.rows), min(r1, self.rows + rh)
        s0, s1 = max(c0, self.cols), min(c1, self.cols + rw)
        needed = [self.pairs[t] for t in band_list if self.pairs[t] is not None]
        if needed and t0 < t1 and s0 < s1:
            lo, hi = min(needed), max(needed) + 1  # one read for all bands: a file decodes these rows once
            block = self.ref.bands[lo:hi, t0 - self.rows:t1 - self.rows, s0 - self.cols:s1 - self.cols]
            for i, t in enumerate(band_list):
                if self.pairs[t] is not None:
                    out[i, t0 - r0:t1 - r0, s0 - c0:s1 - c0] = block[self.pairs[t] - lo]
        squeeze = tuple(0 if isinstance(p, int) else slice(None) for p in picks)
        return out[squeeze]


def merge_references(arrays: list[np.ndarray]) -> np.ndarray:
    """Several aligned references as one: the first where it is known, each next one filling what is
    still unknown after a per-band linear fit to the merged one on their common known pixels.

    The model takes a single reference channel per band, so several dates must become one; the fit
    keeps a later date's level and contrast from showing as seams where it fills the first one's holes.
    """
    if not arrays:
        raise ValueError("merge_references needs at least one reference")
    merged = np.array(arrays[0], dtype=np.float32, copy=True)
    for later in arrays[1:]:
        later = np.asarray(later, dtype=np.float32)
        if later.shape != merged.shape:
            raise ValueError(f"references of shapes {merged.shape} and {later.shape} cannot be merged")
        for b in range(len(merged)):
            holes = np.isnan(merged[b]) & ~np.isnan(later[b])
            if holes.any():
                gain, offset = _fit(later[b], merged[b])
                merged[b][holes] = gain * later[b][holes] + offset
    return merged


def _fit(x: np.ndarray, y: np.ndarray, min_pixels: int = 100) -> tuple[float, float]:
    """(gain, offset) taking x to y over their common known pixels: least squares where there are
    enough of them and they correlate, else matched mean and standard deviation, else as is."""
    common = ~np.isnan(x) & ~np.isnan(y)
    if not common.any():
        return 1.0, 0.0
    xs, ys = x[common].astype(np.float64), y[common].astype(np.float64)
    sx, sy = xs.std(), ys.std()
    gain = 1.0
    if len(xs) >= min_pixels and sx > 0:
        gain = float(np.mean((xs - xs.mean()) * (ys - ys.mean())) / sx ** 2)
    if not gain > 0 or len(xs) < min_pixels:
        gain = sy / sx if sx > 0 and sy > 0 else 1.0
    return gain, float(ys.mean() - gain * xs.mean())


# --- bands ------------------------------------------------------------------------------------------

def sensor_family(scene: Scene) -> str:
    """'oli' (Landsat 8/9 numbering) or 'tm' (Landsat 4/5 TM and 7 ETM+ numbering): the one sensor rule of the
    package (band matching here, composites in napari).

    The file or folder name decides first, then the band names: a product name (LC08, LE07, L8, landsat-8 …)
    or the instrument (OLI; ETM+, TM). Else a band named B10/B11 (thermal, OLI/TIRS only) or SR_B6 (Collection 2
    surface reflectance: ETM+/TM band 6 is the thermal ST_B6), or 10 bands or more, mean OLI. Unknown counts as
    TM/ETM+: this tool fills Landsat 7 scenes.
    """
    for text in (scene.path.name if scene.path is not None else "", *scene.band_names):
        if OLI_IN_NAME.search(text):
            return "oli"
        if TM_IN_NAME.search(text):
            return "tm"
    numbers = {n.upper() for name in scene.band_names for n in re.findall(r"\b(?:SR_)?B\d+", name, re.I)}
    # 10 or more bands: only OLI/TIRS products have that many (an ETM+ stack has 9 with B6 twice)
    return "oli" if numbers & {"B10", "B11", "SR_B6"} or len(scene.band_names) >= 10 else "tm"


def _band_keys(scene: Scene) -> list:
    """A key per band: its TM/ETM+ band number where its name has a Landsat one, else its name."""
    family = sensor_family(scene)
    keys = []
    for name in scene.band_names:
        found = BAND_NUMBER.search(name)
        if not found:
            keys.append(("name", name.strip().lower()))
            continue
        number, vcid = int(found.group(1)), found.group(2)
        if family == "oli":
            keys.append(("tm", OLI_TO_TM[number], vcid) if number in OLI_TO_TM else ("oli", number, vcid))
        else:
            keys.append(("tm", number, vcid))
    return keys


def match_bands(target: Scene, ref: Scene) -> list[int | None]:
    """For each target band, the index of the reference band seeing the same light, or None.

    By Landsat band number where both scenes name some bands so (other bands by equal name), else
    by position when the band counts agree; ValueError when no band matches.
    """
    tkeys, rkeys = _band_keys(target), _band_keys(ref)
    if _numbered(tkeys) and _numbered(rkeys):
        index = {}
        for i, key in enumerate(rkeys):
            index.setdefault(key, i)
        pairs = [index.get(key) for key in tkeys]
        if all(p is None for p in pairs):
            raise ValueError(f"none of its bands ({', '.join(ref.band_names)}) matches a band of the target "
                             f"{target.name} ({', '.join(target.band_names)})")
        return pairs
    if len(tkeys) != len(rkeys):
        raise ValueError(f"it has {len(rkeys)} bands but the target {target.name} has {len(tkeys)}, and their "
                         f"names do not say which is which (Landsat names such as B1, SR_B4)")
    return list(range(len(tkeys)))


def _numbered(keys: list) -> bool:
    return any(key[0] != "name" for key in keys)


# --- grids ------------------------------------------------------------------------------------------

def grid_offset(target: Scene, ref: Scene) -> tuple[int, int]:
    """Where the reference's pixel (0, 0) falls on the target's grid, as whole (rows, columns)."""
    tgrid = _geotransform(target.geo_tags, f"the target {target.name}'s")
    rgrid = _geotransform(ref.geo_tags, "its")
    if tgrid is None or rgrid is None:
        if target.shape[1:] != ref.shape[1:]:
            which = ("neither scene is" if tgrid is None and rgrid is None
                     else "it is not" if rgrid is None else f"the target {target.name} is not")
            raise ValueError(f"{which} georeferenced and the sizes differ ({ref.shape[1]}×{ref.shape[2]} against "
                             f"the target's {target.shape[1]}×{target.shape[2]}), so it cannot be aligned")
        return 0, 0  # pixel for pixel
    tcrs, rcrs = _crs(target.geo_tags), _crs(ref.geo_tags)
    if tcrs != rcrs:
        raise ValueError(f"its coordinate system ({_crs_text(rcrs)}) is not the target {target.name}'s "
                         f"({_crs_text(tcrs)}); reproject it first")
    (tx, tdx, ty, tdy), (rx, rdx, ry, rdy) = tgrid, rgrid
    across = max(target.shape[1], target.shape[2], ref.shape[1], ref.shape[2])
    if not (_close(rdx, tdx, across) and _close(rdy, tdy, across)):
        raise ValueError(f"its pixel size ({abs(rdx):g}×{abs(rdy):g}) is not the target {target.name}'s "
                         f"({abs(tdx):g}×{abs(tdy):g}); resample it to the target's grid first")
    cols, rows = (rx - tx) / tdx + 0.0, (ry - ty) / tdy + 0.0  # + 0.0: no "-0.00" in messages
    if abs(cols - round(cols)) > PIXEL_TOLERANCE or abs(rows - round(rows)) > PIXEL_TOLERANCE:
        raise ValueError(f"its pixels are shifted by a fraction of a pixel ({rows:.2f} rows, {cols:.2f} columns) "
                         f"from the target {target.name}'s grid; resample it onto that grid first")
    return int(round(rows)), int(round(cols))


def _close(a: float, b: float, pixels: int) -> bool:
    """Two pixel sizes whose difference, over `pixels` pixels, stays under SIZE_TOLERANCE of a pixel."""
    return abs(a - b) * pixels <= SIZE_TOLERANCE * max(abs(a), abs(b))


def _geotransform(tags: dict, whose: str = "its") -> tuple[float, float, float, float] | None:
    """(x0, dx, y0, dy): map x = x0 + column·dx, y = y0 + row·dy at pixel corners, or None when the
    tags do not place the grid (no tags, zero pixel size); ValueError for a rotated grid."""
    if 34264 in tags:
        m = [float(v) for v in tags[34264]]
        if len(m) < 8:
            return None
        if m[1] != 0 or m[4] != 0:
            raise ValueError(f"{whose} grid is rotated or sheared (ModelTransformation); only north-up grids "
                             "can be aligned")
        x0, dx, y0, dy = m[3], m[0], m[7], m[5]
    elif 33922 in tags and 33550 in tags:
        tie, scale = [float(v) for v in tags[33922]], [float(v) for v in tags[33550]]
        if len(tie) < 6 or len(scale) < 2:
            return None
        dx, dy = scale[0], -scale[1]
        x0, y0 = tie[3] - tie[0] * dx, tie[4] - tie[1] * dy
    else:
        return None
    if dx == 0 or dy == 0:
        return None
    if _geokeys(tags).get(1025) == 2:  # PixelIsPoint: the tie point is a pixel's centre, not its corner
        x0, y0 = x0 - dx / 2, y0 - dy / 2
    return x0, dx, y0, dy


def _geokeys(tags: dict) -> dict:
    """GeoKeyDirectory (tag 34735) as {key: value}, values read from the double and text tags."""
    directory = tags.get(34735)
    if not directory or len(directory) < 4:
        return {}
    directory = [int(v) for v in directory]
    doubles, text = tags.get(34736) or (), str(tags.get(34737) or "")
    keys = {}
    for i in range(4, 4 + 4 * directory[3], 4):
        if i + 4 > len(directory):
            break
        key, location, count, value = directory[i:i + 4]
        if location == 0:
            keys[key] = value
        elif location == 34736:
            keys[key] = tuple(round(float(v), 9) for v in doubles[value:value + count])
        elif location == 34737:
            keys[key] = text[value:value + count].rstrip("|")
    return keys


def _crs(tags: dict):
    """An identity of the coordinate system: its EPSG code where it has one, else its defining keys."""
    keys = _geokeys(tags)
    if not keys:
        return None
    code = keys.get(3072) if keys.get(1024, 1) == 1 else keys.get(2048)
    if isinstance(code, int) and 0 < code < 32767:
        return ("EPSG", code)
    return tuple(sorted((k, v) for k, v in keys.items() if k not in DESCRIPTIVE_KEYS))


def _crs_text(crs) -> str:
    if crs is None:
        return "none given"
    return f"EPSG:{crs[1]}" if crs[0] == "EPSG" else "a user-defined one"
