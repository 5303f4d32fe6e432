"""Masks of pixels to fill (True = fill): detect real gaps, simulate SLC-off stripes, combine.

numpy in, numpy out; knows nothing of napari or torch.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import ndimage

from .errors import MaskError

# Landsat 7 SLC-off geometry at 30 m (USGS: "SLC-off products", Storey et al. 2005).
SCENE_WIDTH_M = 185_000.0  # swath width
SCAN_PERIOD_M = 32 * 30.0  # gaps repeat every two 16-line scans
MAX_GAP_WIDTH_M = 14 * 30.0  # gap width at the scene edge, growing linearly from 0 at the centre
DEFAULT_PIXEL_M = 30.0


def pixel_metres(pixel_size: float | None) -> float:
    """Pixel size in metres; degrees (geographic CRS) are converted, unknown (or absurd: zero, denormal,
    infinite) means 30 m."""
    if pixel_size is not None and (isinstance(pixel_size, bool) or not isinstance(pixel_size, numbers.Real)):
        raise MaskError(f"pixel_size must be a number (metres, or degrees) or None, not {type(pixel_size).__name__} "
                        f"{pixel_size!r}")
    if not pixel_size or not math.isfinite(pixel_size) or not 1e-9 < pixel_size < 1e9:
        return DEFAULT_PIXEL_M
    return pixel_size * 111_320.0 if pixel_size < 0.1 else pixel_size


def validate_mask(mask: np.ndarray, shape: tuple[int, ...], fillable: np.ndarray | None = None) -> np.ndarray:
    """Return `mask` as C×H×W bool (possibly a read-only view) for a scene of `shape`, or raise MaskError.

    An H×W mask applies to every band. `fillable` (C×H×W) marks the pixels that have data or may be filled.
    """
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number):
            raise MaskError(f"a mask must be numeric or boolean, not {mask.dtype}")
        mask = np.nan_to_num(mask) != 0
    if mask.ndim == 2 and mask.shape == tuple(shape[1:]):
        mask = np.broadcast_to(mask, shape)
    if mask.shape != tuple(shape):
        raise MaskError(f"the mask has shape {mask.shape} but the scene is {tuple(shape)} (bands×rows×columns)")
    if not mask.any():
        raise MaskError("the mask is empty: no pixel is marked to fill")
    if mask.all() or (fillable is not None and not (fillable & ~mask).any()):
        raise MaskError("the mask covers every pixel: there are no known pixels left to fill from")
    return mask  # an H×W mask stays a read-only broadcast view: no C-fold copy of a whole scene


def union(*masks: np.ndarray) -> np.ndarray:
    """Pixels marked in any mask (H×W masks broadcast over bands)."""
    return np.logical_or.reduce(np.broadcast_arrays(*masks))


def subtract(mask: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Pixels of `mask` not marked in `removed` (say, a painted region to keep)."""
    mask, removed = np.broadcast_arrays(mask, removed)
    return mask & ~removed


# --- detection -------------------------------------------------------------------------------------

def detect_gaps(bands: np.ndarray, nodata: np.ndarray, *, pixel_size: float | None = None,
                zero_is_ambiguous: bool = False) -> np.ndarray:
    """Scan-line gaps and small holes to fill, per band (C×H×W bool).

    Missing pixels come from `nodata` (the file's declared nodata or NaN). Regions wider than a
    scan-line gap (the off-scene border, large blank areas) are left out: they are not gaps and have
    no neighbours to fill from. When the nodata value is 0 (`zero_is_ambiguous`), dark pixels such as
    water may be stored as 0 too, so a zero only counts as a gap where most bands agree and it lies
    in a thin, roughly horizontal, long stripe. An H×W `nodata` is one band and gives an H×W result.
    """
    candidates = np.asarray(nodata, bool)
    if candidates.ndim == 2:
        return detect_gaps(None, candidates[None], pixel_size=pixel_size, zero_is_ambiguous=zero_is_ambiguous)[0]
    if candidates.ndim != 3 or not candidates.size:
        raise MaskError(f"nodata must be C×H×W or H×W with pixels in it, not shape {candidates.shape}")
    if zero_is_ambiguous and len(candidates) > 1:
        near = ndimage.maximum_filter(candidates, size=(1, 3, 3))  # band-to-band offsets of a pixel
        candidates = candidates & (near.sum(0) * 2 >= len(candidates))
    width = _widest_gap_px(pixel_size)
    gaps = np.stack([_thin_part(band, width) for band in candidates])
    if zero_is_ambiguous and width > 2:  # coarser than ~200 m, stripes alias into dots: keep all
        gaps = np.stack([_stripe_like(band, width) for band in gaps])
    return gaps


def detect_large_nodata(nodata: np.ndarray, *, pixel_size: float | None = None) -> np.ndarray:
    """Nodata regions wider than a scan-line gap (off-scene border, blank areas): not filled."""
    nodata = np.asarray(nodata, bool)
    if nodata.ndim == 2:
        return detect_large_nodata(nodata[None], pixel_size=pixel_size)[0]
    width = _widest_gap_px(pixel_size)
    return np.stack([band & ~_thin_part(band, width) for band in nodata])


def scene_zero_is_ambiguous(nodata_value: float | None, source_dtype: str) -> bool:
    """A nodata value of 0 in integer DN data can also be a real (dark) pixel."""
    return nodata_value == 0 and np.dtype(source_dtype).kind in "ui"


def detect_scene_gaps(scene) -> np.ndarray:
    """The gaps of a scene (anything with bands, nodata, pixel_size, nodata_value and source_dtype, such
    as a `scene.Scene`), detected as the command line and the napari widget do: the pixel size sets the
    widest gap, and a nodata value of 0 in integer data is not trusted where it may be dark water.
    Where the scene's Landsat product ships its own gap masks (USGS `gap_mask/*_GM_B<n>.TIF`), they say which
    missing pixels are gaps instead (the off-scene border, 0 in them too, is still no gap)."""
    if not all(hasattr(scene, name) for name in ("bands", "nodata", "pixel_size", "nodata_value", "source_dtype")):
        raise MaskError(f"detect_scene_gaps takes a scene (read_scene(path)), not {type(scene).__name__}; for "
                        "arrays use detect_gaps(bands, nodata)")
    from .maskfile import product_gap_mask  # reads files: only for scenes read from a product

    official = product_gap_mask(scene)
    if official is not None:
        return detect_gaps(scene.bands, np.asarray(scene.nodata) & official, pixel_size=scene.pixel_size)
    return detect_gaps(scene.bands, scene.nodata, pixel_size=scene.pixel_size,
                       zero_is_ambiguous=scene_zero_is_ambiguous(scene.nodata_value, scene.source_dtype))


def _widest_gap_px(pixel_size: float | None) -> int:
    return max(1, math.ceil(MAX_GAP_WIDTH_M / pixel_metres(pixel_size)))


def _thin_part(band: np.ndarray, width: int) -> np.ndarray:
    """Missing pixels that a square closing of the valid data (size `width` + 2) fills in, trimmed to the stripes
    where they border a large nodata area.

    Gaps narrower than the square close up, while the off-scene border and large blank areas stay
    open: closing is a dilation followed by an erosion, which restores wide regions' outlines. Beside a
    large area the square's corners would step into it in blocks; there a pixel stays a gap only where its
    column closes too (known pixels above and below within the square's side, as across a scan-line stripe),
    so the edge of the fill follows the stripes. Pixels that fail that test are dropped as far as they
    connect to the large area (the test then holds at the new edge too).
    """
    size = width + 2
    thin = _closing_fills(band, size)
    large = band & ~thin
    if not large.any():
        return thin
    off_stripe = thin & ~_closing_fills(band, (size, 1))
    parts, count = ndimage.label(off_stripe, structure=np.ones((3, 3)))
    dropped = np.zeros(count + 1, bool)
    dropped[parts[ndimage.binary_dilation(large, np.ones((3, 3))) & off_stripe]] = True
    return thin & ~dropped[parts]


def _closing_fills(band: np.ndarray, size) -> np.ndarray:
    """Missing pixels that a closing of the valid data by a rectangle of `size` fills in (grey_closing: its
    erosion mirrors the dilation for even sides too, so a closing never reaches past a run's ends)."""
    return band & ndimage.grey_closing((~band).view(np.uint8), size=size).astype(bool)


def _stripe_like(band: np.ndarray, width: int) -> np.ndarray:
    """Keep the connected parts that look like scan-line stripes: long and near horizontal."""
    labels, count = ndimage.label(band, structure=np.ones((3, 3)))
    if count == 0:
        return band
    slices = ndimage.find_objects(labels)
    keep = np.zeros(count + 1, bool)
    min_length = min(band.shape[1] // 2, max(20, 4 * width))
    for i, (rows, cols) in enumerate(slices, start=1):
        length, height = cols.stop - cols.start, rows.stop - rows.start
        keep[i] = length >= min_length and length >= 2 * height
    return keep[labels]


# --- simulation ------------------------------------------------------------------------------------

def simulate_slc_off(shape: tuple[int, int], *, seed: int = 0, pixel_size: float | None = None,
                     crop_offset: tuple[int, int] | None = None, angle_deg: float = 8.0,
                     loss: float | None = None) -> np.ndarray:
    """Landsat 7 SLC-off stripes for an H×W crop of a scene (H×W bool, True = gap).

    Stripes slant by `angle_deg` (about 8° in map projection, more at high latitude), repeat every
    two 16-line scans and widen linearly from 0 at the scene's centre column to about 14 pixels (at
    30 m) at its edges, so a whole scene loses about 22 %. `crop_offset` (row, column) says where the
    crop sits in the full scene (None: a random place, drawn from `seed`). `loss` rescales the widths
    to lose that fraction over the full scene.
    """
    height, width = shape
    rng = np.random.default_rng(seed)
    res = pixel_metres(pixel_size)
    scene_px = SCENE_WIDTH_M / res
    period = SCAN_PERIOD_M / res
    max_width = MAX_GAP_WIDTH_M / res * (1.0 if loss is None else loss / 0.21875)
    if crop_offset is None:
        crop_offset = (rng.uniform(0, scene_px), rng.uniform(0, max(scene_px - width, 1)))
    row0, col0 = crop_offset
    phase = rng.uniform(0, period)
    slope = math.tan(math.radians(angle_deg + rng.normal(0, 0.5)))
    rows = np.arange(height)[:, None] + row0
    cols = np.arange(width)[None, :] + col0
    centre = scene_px / 2
    gap_width = max_width * np.abs(cols - centre) / centre
    # The two halves of the scene lose alternate scan edges: their gaps sit half a period apart.
    side_phase = np.where(cols < centre, 0.0, period / 2)
    position = np.mod(rows - slope * (cols - centre) - phase - side_phase, period)
    return position < gap_width


def transplant_gaps(shape: tuple[int, int], source: np.ndarray, *, seed: int = 0,
                    source_pixel_size: float | None = None, pixel_size: float | None = None) -> np.ndarray:
    """Real gap geometry on a complete image: a random crop (flipped, rescaled to the target's pixel
    size, tiled where the source is smaller) of a real gap mask `source` (H'×W' bool)."""
    source = np.asarray(source, bool)
    if source.ndim == 3:
        source = source.any(0)
    if not source.any():
        raise MaskError("the source gap mask has no gaps to transplant")
    rng = np.random.default_rng(seed)
    zoom = pixel_metres(source_pixel_size) / pixel_metres(pixel_size)
    zoom = 1.0 if abs(zoom - 1) <= 0.01 else zoom
    height, width = (max(1, int(round(n * zoom))) for n in source.shape)  # the rescaled source
    if rng.random() < 0.5:
        source = source[:, ::-1]
    reps = (math.ceil(shape[0] / height) + 1, math.ceil(shape[1] / width) + 1)
    r = rng.integers(0, reps[0] * height - shape[0] + 1)
    c = rng.integers(0, reps[1] * width - shape[1] + 1)
    # The crop of the rescaled source tiled over the plane, each pixel looked up (nearest neighbour) rather than
    # the whole source rescaled and tiled: training draws many small crops from scene-sized masks.
    rows, cols = (r + np.arange(shape[0])) % height, (c + np.arange(shape[1])) % width
    if zoom != 1.0:
        rows = np.minimum(((rows + 0.5) / zoom).astype(int), source.shape[0] - 1)
        cols = np.minimum(((cols + 0.5) / zoom).astype(int), source.shape[1] - 1)
    return source[np.ix_(rows, cols)]
