"""Another date of the same place ("reference") on the target's pixel grid.

A reference is read like any scene, put on the target's grid by its georeferencing (or pixel for
pixel when neither scene has any), and its bands matched to the target's by Landsat band number.
Pixels the reference does not know (outside its extent, its nodata and gaps) are NaN.
numpy only; knows nothing of torch or napari.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import SceneError
from .landsat import sensor_family, tm_band_keys  # noqa: F401 - sensor_family: importable from here as before
from .scene import Scene, read_scene
from .views import BandWindows, basic_index, index_span

PIXEL_TOLERANCE = 0.01  # offsets within this many pixels of an integer count as on the grid
# pixel sizes count as the same where their difference, over the larger grid, adds up to less than this share of a
# pixel: two dates of one path and row differ by a few centimetres in 600 m (0.003 %), far under a pixel per scene
SIZE_TOLERANCE = 0.1


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
    if np.isinf(array).any():  # unknown, as NaN is: copied only then (a whole scene is hundreds of MB)
        array = np.where(np.isinf(array), np.float32(np.nan), array)
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
        if not overlaps(target, ref, self.rows, self.cols):
            raise SceneError(f"{name}: {apart(target, ref, self.rows, self.cols)}")
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
                gain, offset = linear_fit(later[b], merged[b])
                merged[b][holes] = gain * later[b][holes] + offset
    return merged


def linear_fit(x: np.ndarray, y: np.ndarray, min_pixels: int = 100) -> tuple[float, float]:
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

def match_bands(target: Scene, ref: Scene) -> list[int | None]:
    """For each target band, the index of the reference band seeing the same light, or None.

    By Landsat band number where both scenes name some bands so (other bands by equal name), else
    by position when the band counts agree; ValueError when no band matches.
    """
    tkeys, rkeys = tm_band_keys(target), tm_band_keys(ref)
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
    tgrid, rgrid = target.grid, ref.grid
    for grid, whose in ((tgrid, f"the target {target.name}'s"), (rgrid, "its")):
        if grid is not None and grid.rotated:
            raise ValueError(f"{whose} grid is rotated or sheared (ModelTransformation); only north-up grids "
                             "can be aligned")
    if tgrid is None or rgrid is None:
        if target.shape[1:] != ref.shape[1:]:
            which = ("neither scene is" if tgrid is None and rgrid is None
                     else "it is not" if rgrid is None else f"the target {target.name} is not")
            raise ValueError(f"{which} georeferenced and the sizes differ ({ref.shape[1]}×{ref.shape[2]} against "
                             f"the target's {target.shape[1]}×{target.shape[2]}), so it cannot be aligned")
        return 0, 0  # pixel for pixel
    if tgrid.crs != rgrid.crs:
        raise ValueError(f"its coordinate system ({rgrid.crs_text}) is not the target {target.name}'s "
                         f"({tgrid.crs_text}); reproject it first")
    (_, tdx, _, _, _, tdy), (_, rdx, _, _, _, rdy) = tgrid.transform, rgrid.transform
    across = max(target.shape[1], target.shape[2], ref.shape[1], ref.shape[2])
    if not (_close(rdx, tdx, across) and _close(rdy, tdy, across)):
        raise ValueError(f"its pixel size ({abs(rdx):g}×{abs(rdy):g}) is not the target {target.name}'s "
                         f"({abs(tdx):g}×{abs(tdy):g}); resample it to the target's grid first")
    rows, cols = tgrid.offset(rgrid)
    if abs(cols - round(cols)) > PIXEL_TOLERANCE or abs(rows - round(rows)) > PIXEL_TOLERANCE:
        if not overlaps(target, ref, rows, cols):  # far off: a shift of a fraction of a pixel is beside the point
            raise ValueError(apart(target, ref, rows, cols))
        raise ValueError(f"its pixels are shifted by a fraction of a pixel ({rows:.2f} rows, {cols:.2f} columns) "
                         f"from the target {target.name}'s grid; resample it onto that grid first")
    return int(round(rows)), int(round(cols))


def overlaps(target: Scene, ref: Scene, rows: float, cols: float) -> bool:
    """Whether the reference, its pixel (0, 0) at target (rows, cols), covers any of the target's pixels."""
    (_, h, w), (_, rh, rw) = target.shape, ref.shape
    return max(0, rows) < min(h, rows + rh) and max(0, cols) < min(w, cols + rw)


def apart(target: Scene, ref: Scene, rows: float, cols: float) -> str:
    """Where a reference that does not overlap the target lies, in words."""
    (_, h, w), (_, rh, rw) = target.shape, ref.shape
    return (f"does not overlap the target {target.name} (it lies {rows:+.0f} rows, {cols:+.0f} columns away on a "
            f"{rh}×{rw} grid against the target's {h}×{w})")


def _close(a: float, b: float, pixels: int) -> bool:
    """Two pixel sizes whose difference, over `pixels` pixels, stays under SIZE_TOLERANCE of a pixel."""
    return abs(a - b) * pixels <= SIZE_TOLERANCE * max(abs(a), abs(b))
