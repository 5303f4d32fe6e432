"""Reading and writing Landsat scenes: GeoTIFF files and Landsat product folders.

Knows TIFF and Landsat naming; knows nothing of napari or torch.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import re
import struct
import tempfile
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tifffile

from .errors import SceneError
from .options import check_path

# GeoTIFF tags that carry georeferencing, copied verbatim from input to output.
GEO_TAGS = {
    33550: "ModelPixelScale",
    33922: "ModelTiepoint",
    34264: "ModelTransformation",
    34735: "GeoKeyDirectory",
    34736: "GeoDoubleParams",
    34737: "GeoAsciiParams",
}
GDAL_METADATA = 42112
GDAL_NODATA = 42113
TIFF_SUFFIXES = (".tif", ".tiff")
# Landsat band files: LE07_..._B1.TIF, ..._B6_VCID_1.TIF, ..._SR_B4.TIF
BAND_FILE = re.compile(r"_(B\d{1,2}(?:_VCID_\d)?)\.tiff?$", re.IGNORECASE)
# The other files of a Landsat product that describe the scene (metadata, angles, quality bands).
PRODUCT_FILE = re.compile(r"_(MTL|ANG|MD5)\.(txt|xml|json)$|_(BQA|QA_PIXEL|QA_RADSAT|SR_QA_AEROSOL|"
                          r"ST_QA|ST_[A-Z]+|GM_B\d+)\.tiff?$", re.IGNORECASE)
PANCHROMATIC = {"B8"}  # 15 m band of Landsat 7/8: twice the size of the others
# Pixel types whose every value float32 holds exactly; other inputs need float64 (or their own type) out.
EXACT_IN_FLOAT32 = frozenset(np.dtype(t).str for t in ("b1", "u1", "i1", "u2", "i2", "f2", "f4"))
# GDAL_METADATA items that describe the pixel values of the source and are stale after a fill.
STALE_METADATA = re.compile(r"^STATISTICS_", re.IGNORECASE)
PROVENANCE_PREFIX = "CONVNP_"


class _TifffileLog(logging.Filter):
    """tifffile logs (and goes on) where a file is odd; `_read_tiff` turns what matters into a SceneError,
    so these records are only noise on stderr: a GDAL_NODATA text that does not fit the pixel type
    ('0.0' in a uint8 file) always, anything while this module reads a file."""

    quiet = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self.quiet, "on", False):
            return False
        return "GDAL_NODATA" not in record.getMessage()


_TIFFFILE_LOG = _TifffileLog()
logging.getLogger("tifffile").addFilter(_TIFFFILE_LOG)


@dataclass
class Scene:
    """One Landsat scene in memory.

    bands: C×H×W float32, nodata pixels set to NaN so no fill value leaks into statistics.
    nodata: C×H×W bool, True where the file declared no data (nodata tag or NaN).
    geo_tags: raw GeoTIFF tag values by tag code (numbers as tuples), written back unchanged.
    sources: every file the scene was read from (for a Landsat folder: its band files and metadata
    files); a writer never writes over any of them.
    gdal_metadata: the source's GDAL_METADATA XML (other items than band names are carried to outputs).
    """

    bands: np.ndarray
    band_names: list[str]
    nodata: np.ndarray
    geo_tags: dict[int, object] = field(default_factory=dict)
    nodata_value: float | None = None
    source_dtype: str = "float32"
    path: Path | None = None
    sources: tuple[Path, ...] = ()
    gdal_metadata: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.bands.shape

    @property
    def name(self) -> str:
        return self.path.stem if self.path else "scene"

    @property
    def pixel_size(self) -> float | None:
        """Ground size of a pixel in map units (metres for UTM), when the file says so (and sensibly)."""
        for code, index in ((33550, 0), (34264, 0)):
            values = _numbers(self.geo_tags.get(code))
            if values is not None and len(values) > index:
                size = abs(values[index])
                if math.isfinite(size) and 1e-9 < size < 1e9:  # no zero, denormal or absurd sizes
                    return size
        return None

    def with_bands(self, bands: np.ndarray, names: list[str] | None = None) -> "Scene":
        """A copy holding other pixel values (a fill, a variance) with the same georeferencing."""
        bands = np.asarray(bands, dtype=np.float32)
        if bands.ndim == 2:
            bands = bands[None]
        if bands.shape[1:] != self.bands.shape[1:]:
            raise SceneError(f"bands of shape {bands.shape} do not fit scene {self.name} of shape {self.shape}")
        return replace(
            self,
            bands=bands,
            band_names=names or self.band_names[: len(bands)],
            nodata=np.isnan(bands),
            nodata_value=None,
            source_dtype="float32",
        )


def _numbers(value) -> list[float] | None:
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        return [float(v) for v in np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()]
    except (TypeError, ValueError):
        return None


def _proc_field(path: str, key: str) -> str | None:
    """The value after `key` in a Linux /proc file ('MemAvailable:' in /proc/meminfo), or None."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key):
                    return line.split()[1]
    except OSError:
        pass
    return None


def available_memory() -> int:
    """Bytes of memory the system can still hand out (MemAvailable), or a huge number if unknown."""
    kib = _proc_field("/proc/meminfo", "MemAvailable:")
    return int(kib) * 1024 if kib is not None else 1 << 62


def check_memory(needed: int, what: str) -> None:
    """Fail early, with the sizes named, instead of being killed half-way by the kernel."""
    available = available_memory()
    if needed > available:
        raise SceneError(f"{what} needs about {needed / 2**30:.1f} GiB of memory but only "
                         f"{available / 2**30:.1f} GiB is free; use a smaller crop or a machine with more memory")


# --- reading ---------------------------------------------------------------------------------------

class BandWindows:
    """A C×H×W array computed window by window as it is indexed (`x[b]`, `x[:, rows, cols]`), for what the fill
    only ever needs a band or a tile of; iteration gives the bands, `np.asarray` the whole. Subclasses set
    `shape` and define `__getitem__`."""

    shape: tuple[int, int, int]

    def __getitem__(self, index) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self):
        return (self[b] for b in range(len(self)))

    def __array__(self, dtype=None, copy=None):
        return self[...] if dtype is None else self[...].astype(dtype)


class FloatView(BandWindows):
    """A scene's integer pixels as float32 (NaN = nodata), converted window by window as they are indexed:
    a 16-bit scene then takes half the memory of its float32 copy (670 MB less for a full Landsat scene)."""

    dtype = np.dtype(np.float32)

    def __init__(self, raw: np.ndarray, nodata: np.ndarray):
        self.raw, self.nodata = raw, nodata
        self.shape, self.ndim, self.size = raw.shape, raw.ndim, raw.size
        self._any_nodata = bool(nodata.any())

    def __getitem__(self, index) -> np.ndarray:
        values = np.asarray(self.raw[index], np.float32)
        if self._any_nodata:
            values[self.nodata[index]] = np.nan
        return values


def read_scene(path: str | os.PathLike, *, lazy_float: bool = False) -> Scene:
    """Read a GeoTIFF file or a Landsat product folder (per-band *_B<n>.TIF files).

    lazy_float: a single file of 8- or 16-bit integers keeps its pixels as stored, and `bands` is a
    `FloatView` that converts them to float32 window by window (for the file-to-file fill); where the file
    is one image in strips or tiles, its pixels are not even held: they are decoded window by window
    (`TiffPixels`), after one pass that checks every block decodes and finds the nodata pixels."""
    path = Path(check_path(path, "read_scene's path", SceneError))
    if not path.exists():
        raise SceneError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_landsat_folder(path)
    raw = _read_tiff(path, windowed=lazy_float)
    _check_fill_pair(path, provenance_items(raw["metadata"]))
    return _make_scene(raw["data"], raw["names"], raw["geo_tags"], raw["nodata_value"], path, (path,),
                       raw["metadata"], lazy_float, raw.get("nodata"))


FILLED_MASK_SUFFIX = "_filled_mask"  # `<out stem>_filled_mask.tif`: which pixels of a fill were filled


def provenance_items(metadata) -> dict[str, str]:
    """The CONVNP_ items of GDAL metadata XML (what wrote a file, from what), without the prefix."""
    root = _metadata_root(metadata)
    return {} if root is None else {
        item.get("name")[len(PROVENANCE_PREFIX):]: item.text or "" for item in root.iter("Item")
        if (item.get("name") or "").upper().startswith(PROVENANCE_PREFIX)}


def read_provenance(path: str | os.PathLike) -> dict[str, str]:
    """`provenance_items` of a TIFF file, from its tags alone; {} where it has none, is no TIFF or no regular
    file (a FIFO is never opened: that would wait for a writer)."""
    path = Path(path)
    try:
        if not path.is_file():
            return {}
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            return provenance_items(tags[GDAL_METADATA].value if GDAL_METADATA in tags else None)
    except Exception:  # noqa: BLE001 - not a TIFF we can read: it carries no provenance
        return {}


def _check_fill_pair(path: Path, items: dict) -> None:
    """A fill and its `_filled_mask` sidecar carry the hash of one filled-pixel mask: read beside each other
    with different hashes, they come from different runs (two writers raced, or one file was replaced)."""
    digest = items.get("MASK_SHA256")
    if not digest:
        return
    if path.stem.endswith(FILLED_MASK_SUFFIX):
        stem = path.stem[:-len(FILLED_MASK_SUFFIX)]
        partners = [path.with_name(stem + suffix) for suffix in (".tif", ".tiff", ".TIF", ".TIFF")]
    else:
        partners = [path.with_name(f"{path.stem}{FILLED_MASK_SUFFIX}.tif")]
    for partner in partners:
        other = read_provenance(partner).get("MASK_SHA256")
        if other and other != digest:
            raise SceneError(f"{path}: it and {partner.name} come from different runs (their CONVNP_MASK_SHA256 "
                             "differ), so the filled-pixel mask does not describe this fill; fill it again")


def scene_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """C×H×W of a GeoTIFF or a Landsat product folder, from the headers alone (no pixel is read)."""
    path = Path(path)
    if not path.exists():
        raise SceneError(f"{path}: no such file or folder")
    if path.is_dir():
        _, bands, _ = _landsat_files(path)
        return (len(bands), *_read_tiff(bands[0][1], pixels=False)["shape"][1:])
    return tuple(_read_tiff(path, pixels=False)["shape"])


def read_raw(scene: Scene) -> np.ndarray:
    """The scene's pixels as stored (C×H×W in the file's own type), read again from its sources: the
    exact values where float32 `bands` would round them (float64, 32- and 64-bit integers)."""
    if scene.path is None:
        raise SceneError("scene: it was not read from a file, so it has no stored values")
    path = Path(scene.path)
    if path.is_dir():
        _, bands, _ = _landsat_files(path)
        parts = [_read_tiff(f)["data"] for _, f in bands]
        raw = np.concatenate(parts) if len(parts) > 1 else parts[0]
    else:
        raw = _read_tiff(path)["data"]
    if raw.shape != scene.shape:
        raise SceneError(f"{path}: it changed since it was read ({raw.shape} instead of {scene.shape})")
    return raw


def _read_tiff(path: Path, pixels: bool = True, windowed: bool = False) -> dict:
    """The first image of a TIFF as C×H×W in its own type, with its tags (pixels=False: shape only;
    windowed: a `TiffPixels` where the file allows, with the nodata pixels under "nodata")."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise SceneError(f"{path}: cannot read it ({_os_problem(err)})") from None
    if size == 0:
        raise SceneError(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise SceneError(f"{path}: not a GeoTIFF (expected a .tif/.tiff file, got '{path.suffix}')")
    nodata = None
    with _decoding(path), tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise SceneError(f"{path}: not a readable TIFF file, or a damaged one (no image found in it)")
        series = tif.series[0]
        dtype = np.dtype(series.dtype)
        if dtype.kind == "c":
            raise SceneError(f"{path}: complex pixels ({dtype}) are not supported; store the real and "
                             "imaginary parts (or the magnitude) as real-valued bands")
        if dtype.kind not in "buif":
            raise SceneError(f"{path}: pixels of type {dtype} are not supported (integers or floats only)")
        shape = _bands_first_shape(series.shape, series.axes, path)
        page = tif.pages[0]
        tags = page.tags
        geo_tags = {code: _tag_value(tags[code].value) for code in GEO_TAGS if code in tags}
        nodata_text = tags[GDAL_NODATA].value if GDAL_NODATA in tags else None
        metadata = tags[GDAL_METADATA].value if GDAL_METADATA in tags else None
        if not pixels:
            return {"shape": shape, "dtype": dtype}
        _check_data_within_file(series, size, path)
        if windowed and dtype.kind in "ui" and dtype.str in EXACT_IN_FLOAT32 and TiffPixels.fits(series):
            check_memory(int(np.prod(series.shape)), f"{path}: reading")  # at most a nodata bool per pixel
            data = TiffPixels(path, shape, dtype)
            nodata = data.scan(_parse_nodata(nodata_text))  # every block decoded once now: bad input fails here
        else:
            check_memory(int(np.prod(series.shape)) * (dtype.itemsize + 5), f"{path}: reading")
            data = series.asarray()
    if isinstance(data, np.ndarray):
        data = data.reshape(shape) if data.ndim == 2 else _to_bands_first(data, series.axes, path)
    names = _band_names_from_metadata(metadata, shape[0])
    return {"data": data, "names": names, "geo_tags": geo_tags, "nodata_value": _parse_nodata(nodata_text),
            "metadata": _metadata_text(metadata), "nodata": nodata}


class _decoding:
    """Turns what tifffile, its codecs and the OS raise while a TIFF is read into one SceneError line."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        _TIFFFILE_LOG.quiet.on = True

    def __exit__(self, kind, err, traceback):
        _TIFFFILE_LOG.quiet.on = False
        if err is None or isinstance(err, SceneError) or not isinstance(err, Exception):
            return False
        path = self.path
        if isinstance(err, tifffile.TiffFileError):
            raise SceneError(f"{path}: not a readable TIFF file, or a damaged one ({_short(err)})") from None
        if isinstance(err, MemoryError):
            raise SceneError(f"{path}: out of memory while reading it; use a smaller crop or a machine with "
                             "more memory") from None
        if isinstance(err, PermissionError):
            raise SceneError(f"{path}: cannot read it ({_os_problem(err)})") from None
        if isinstance(err, OSError):
            if err.errno in (errno.EIO, errno.ENOMEM, errno.EISDIR):
                raise SceneError(f"{path}: cannot read it ({_os_problem(err)})") from None
            raise SceneError(f"{path}: the TIFF is damaged or truncated ({_short(err)})") from None
        if isinstance(err, (ValueError, EOFError, KeyError, IndexError, TypeError, RuntimeError, struct.error)):
            if "imagecodecs" in str(err) and "returned" not in str(err):
                raise SceneError(f"{path}: its compression needs the package imagecodecs ({_short(err)})") from None
            # the codecs (imagecodecs' DeflateError, ZstdError, JpegError, …) are RuntimeErrors
            raise SceneError(f"{path}: the TIFF is damaged or truncated: its pixels do not decode "
                             f"({type(err).__name__}: {_short(err)})") from None
        return False


_THREADS = {}  # the process's threads that decode and compress blocks (the codecs release the GIL), made when needed
_THREADS_LOCK = threading.Lock()


def _forget_threads():
    """In a forked child: none of the parent's threads came along, and the lock may have been held."""
    global _THREADS_LOCK
    _THREADS.clear()
    _THREADS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_threads)


def _worker_threads():
    from concurrent.futures import ThreadPoolExecutor

    with _THREADS_LOCK:
        if "pool" not in _THREADS:
            _THREADS["pool"] = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="codec")
        return _THREADS["pool"]


class TiffPixels(BandWindows):
    """The pixels of a one-image TIFF as stored (C×H×W), decoded strip by strip (or tile by tile) when
    indexed, so that a file-to-file fill never holds the whole input. The last block decoded is kept:
    the fill reads a row of tiles window by window, then the same rows again to write them."""

    ndim = 3

    def __init__(self, path: Path, shape: tuple[int, int, int], dtype: np.dtype):
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.size = int(np.prod(shape))
        stat = path.stat()
        self._stamp = (stat.st_size, stat.st_mtime_ns)  # a file changed under the fill is an error, not a picture
        self._cache = ((0, 0, 0, 0), None)  # ((first band, last band + 1, first row, last row + 1), pixels)

    @staticmethod
    def fits(series) -> bool:
        """One image in strips or tiles, with its bands as samples."""
        if len(series.pages) != 1 or series.axes not in ("YX", "SYX", "YXS"):
            return False
        page = series.pages[0]
        return (page.imagedepth == 1 and not page.is_subsampled and page.dataoffsets is not None
                and len(page.dataoffsets) > 0)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "TiffPixels":
        """A TIFF of this layout (one a `TiffStream` wrote, say) to be read window by window."""
        path = Path(path)
        with _decoding(path), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if not cls.fits(series):
                raise SceneError(f"{path}: not a single image in strips or tiles; it cannot be read window by window")
            shape = _bands_first_shape(series.shape, series.axes, path)
            return cls(path, shape, np.dtype(series.dtype))

    def __getitem__(self, index) -> np.ndarray:
        bands, rows, cols = basic_index(index, self.shape)
        band_range, row_range = range(self.shape[0])[bands], range(self.shape[1])[rows]
        if isinstance(band_range, range) and band_range.step != 1 or isinstance(row_range, range) and \
                row_range.step != 1:
            return self[:, :, :][index]  # strided: rare; the whole, then numpy's indexing
        b0, b1 = index_span(band_range)
        r0, r1 = index_span(row_range)
        (cb0, cb1, cr0, cr1), pixels = self._cache
        if pixels is None or not (cb0 <= b0 and b1 <= cb1 and cr0 <= r0 and r1 <= cr1):
            pixels = self._decode(b0, b1, r0, r1)
            cb0, cb1, cr0, cr1 = b0, b1, r0, r1
            self._cache = ((cb0, cb1, cr0, cr1), pixels)
        local_bands = band_range - cb0 if isinstance(band_range, int) else slice(b0 - cb0, b1 - cb0)
        local_rows = row_range - cr0 if isinstance(row_range, int) else slice(r0 - cr0, r1 - cr0)
        return pixels[local_bands, local_rows][..., cols]

    def scan(self, nodata_value: float | None) -> np.ndarray:
        """Decode every block once (a damaged one fails now, before any fill) and return the nodata pixels
        (C×H×W bool, or a broadcast False when there are none)."""
        nodata = None
        c, h, _ = self.shape
        with tifffile.TiffFile(self.path) as tif:
            length = _block_length(tif.pages[0], h)
        step = length * max(1, 256 // length)  # whole strips or tiles: none is decoded twice
        for r0 in range(0, h, step):
            pixels = self._decode(0, c, r0, min(h, r0 + step))
            equal = _equals_nodata(pixels, nodata_value)
            if equal.any():
                if nodata is None:
                    nodata = np.zeros(self.shape, bool)
                nodata[:, r0:r0 + step] = equal[:, :min(h, r0 + step) - r0]
        if nodata is None:
            return np.broadcast_to(np.False_, self.shape)
        return nodata

    def _decode(self, b0: int, b1: int, r0: int, r1: int) -> np.ndarray:
        """Bands b0…b1−1, rows r0…r1−1, every column, in the file's type."""
        c, h, w = self.shape
        out = np.zeros((b1 - b0, r1 - r0, w), self.dtype)
        stat = self.path.stat()
        if (stat.st_size, stat.st_mtime_ns) != self._stamp:
            raise SceneError(f"{self.path}: the file changed while it was being filled; nothing was written, "
                             "run again")
        with _decoding(self.path), tifffile.TiffFile(self.path) as tif:
            page = tif.pages[0]
            length = _block_length(page, h)
            width = page.tilewidth if page.is_tiled else w
            down, across = -(-h // length), -(-w // width)
            separate = page.planarconfig == 2 and c > 1
            planes = range(b0, b1) if separate else [0]
            wanted = [p * down * across + y * across + x for p in planes
                      for y in range(r0 // length, -(-r1 // length)) for x in range(across)]
            offsets, counts = page.dataoffsets, page.databytecounts
            read = tif.filehandle.read_segments([offsets[i] for i in wanted], [counts[i] for i in wanted],
                                                indices=wanted, sort=True)
            # decoded on every core (the codecs release the GIL), in the order read
            decoded = _worker_threads().map(lambda item: page.decode(*item, jpegtables=page.jpegtables), list(read))
            for segment, (plane, _, y, x, _), _ in decoded:
                if segment is None:
                    continue  # a block the file leaves out reads as 0, as tifffile does
                rows = slice(max(y, r0), min(y + segment.shape[1], r1, h))
                cols = slice(x, min(x + segment.shape[2], w))
                if rows.start >= rows.stop:
                    continue
                part = segment[0, rows.start - y:rows.stop - y, :cols.stop - x]
                if separate:
                    out[plane - b0, rows.start - r0:rows.stop - r0, cols] = part[..., 0]
                else:
                    out[:, rows.start - r0:rows.stop - r0, cols] = np.moveaxis(part[..., b0:b1], -1, 0)
        return out


def _block_length(page, height: int) -> int:
    """Rows of a TIFF page's strips or tiles."""
    return page.tilelength if page.is_tiled else min(page.rowsperstrip or height, height)


def basic_index(index, shape) -> tuple:
    """(bands, rows, cols) of an index into a C×H×W array made of ints, slices and at most one Ellipsis."""
    index = index if isinstance(index, tuple) else (index,)
    for i in index:
        if not (i is Ellipsis or isinstance(i, (int, np.integer, slice))):
            raise IndexError(f"TiffPixels takes ints, slices and ..., not {type(i).__name__}")
    if any(i is Ellipsis for i in index):
        at = next(k for k, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1:]
    index = tuple(int(i) if isinstance(i, np.integer) else i for i in index)
    return index + (slice(None),) * (len(shape) - len(index))


def index_span(indices) -> tuple[int, int]:
    """First and one past the last of an int or a step-1 range."""
    if isinstance(indices, int):
        return indices, indices + 1
    return (indices.start, indices.stop) if len(indices) else (0, 0)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] + ("…" if len(text) > 200 else "")


def _os_problem(err: OSError) -> str:
    if isinstance(err, PermissionError):
        return "permission denied"
    if err.errno == errno.ENOMEM:
        return "out of memory"
    return err.strerror or _short(err)


def _check_data_within_file(series, size: int, path: Path) -> None:
    """Strips or tiles that end past the end of the file: a truncated file (copy or download cut
    short). Compressed data may otherwise decode silently into grey or constant rows (JPEG)."""
    for page in series.pages:
        if page is None:
            continue
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        for i, (offset, count) in enumerate(zip(offsets, counts)):
            if count and offset + count > size:
                raise SceneError(f"{path}: the TIFF is truncated: its data block {i + 1} of {len(counts)} ends at "
                                 f"byte {offset + count} but the file has {size} bytes")


def _tag_value(value):
    """A tag value as written back: text stays text, numbers become a tuple (one value too)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    try:
        return tuple(np.atleast_1d(np.asarray(value)).ravel().tolist())
    except (TypeError, ValueError):
        return value


def _metadata_text(metadata) -> str | None:
    if metadata is None:
        return None
    if isinstance(metadata, bytes):
        metadata = metadata.decode("utf-8", "replace")
    return str(metadata).strip("\x00").strip() or None


def _bands_first_shape(shape, axes: str, path: Path) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3 and axes.endswith("S"):
        return (shape[2], shape[0], shape[1])
    if len(shape) == 3:
        return shape
    raise SceneError(f"{path}: cannot read an image with axes '{axes}' and shape {shape} as bands×rows×columns")


def _to_bands_first(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    if data.ndim == 2:
        return data[None]
    if data.ndim == 3 and axes.endswith("S"):
        return np.moveaxis(data, -1, 0)
    if data.ndim == 3:
        return data
    raise SceneError(f"{path}: cannot read an image with axes '{axes}' and shape {data.shape} as bands×rows×columns")


def _parse_nodata(text) -> float | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    try:
        return float(str(text).strip().strip("\x00"))
    except ValueError:
        return None


def _metadata_root(metadata) -> ET.Element | None:
    """GDAL's metadata XML as an element, or None when there is none or it is not well-formed (GDAL
    itself then ignores it, and so does this reader: the scene reads with default band names)."""
    text = _metadata_text(metadata)
    if not text:
        return None
    try:
        root = ET.fromstring(text)
    except (ET.ParseError, ValueError):
        return None
    return root if root.tag == "GDALMetadata" else None


def _band_names_from_metadata(metadata, count: int) -> list[str] | None:
    """Band descriptions from GDAL's metadata XML (written by GDAL and by our writer)."""
    root = _metadata_root(metadata)
    if root is None:
        return None
    names = {}
    for item in root.iter("Item"):
        if item.get("role") == "description" and item.get("sample") is not None:
            try:
                sample = int(item.get("sample"))
            except ValueError:
                continue
            if 0 <= sample < count:
                names[sample] = (item.text or "").strip()
    if len(names) != count:
        return None
    return [names[i] or f"band {i + 1}" for i in range(count)]


def _make_scene(raw: np.ndarray, names, geo_tags, nodata_value, path: Path, sources, metadata,
                lazy_float: bool = False, nodata: np.ndarray | None = None) -> Scene:
    if lazy_float and raw.dtype.kind in "ui" and raw.dtype.str in EXACT_IN_FLOAT32:
        nodata = _compact(_equals_nodata(raw, nodata_value)) if nodata is None else nodata
        bands = FloatView(raw, nodata)
    else:
        bands, nodata = _float_bands(raw, nodata_value)
        check_float32_precision(raw, nodata, str(path))
    if nodata.all():
        raise SceneError(f"{path}: every pixel is nodata; there is nothing to fill from")
    names = names or [f"band {i + 1}" for i in range(len(bands))]
    return Scene(bands, list(names), nodata, geo_tags, nodata_value, str(raw.dtype), path, tuple(sources), metadata)


FLOAT32_STEPS = 4096  # float32 steps a band's spread must hold at its largest value


def check_float32_precision(raw: np.ndarray, nodata: np.ndarray, what: str) -> None:
    """Every fill works in float32: values with a large offset and a small spread (4e9 + a DN of 0–1000 in a
    32-bit integer) would lose their differences there and come out in a few levels. An error, not such a fill."""
    if raw.dtype.str in EXACT_IN_FLOAT32 or raw.dtype.kind not in "uif":
        return
    for b, band in enumerate(raw):
        keep = ~nodata[b] & np.isfinite(band) if band.dtype.kind == "f" else ~nodata[b]
        if not keep.any():
            continue
        top = np.inf if band.dtype.kind == "f" else np.iinfo(band.dtype).max
        bottom = -np.inf if band.dtype.kind == "f" else np.iinfo(band.dtype).min
        lo = float(np.min(band, where=keep, initial=top))
        hi = float(np.max(band, where=keep, initial=bottom))
        with np.errstate(over="ignore"):  # beyond float32's range: nodata or refused elsewhere, not here
            step = float(np.spacing(np.float32(max(abs(lo), abs(hi)))))
        if 0 < hi - lo < FLOAT32_STEPS * step:
            raise SceneError(f"{what}: band {b + 1}'s values lie between {lo:.10g} and {hi:.10g}; in float32, which "
                             f"the fill works in, values there are {step:g} apart, too coarse for that spread: "
                             "subtract an offset from the values first")


def _float_bands(raw: np.ndarray, nodata_value) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            bands = raw.astype(np.float32)
    except MemoryError:
        raise SceneError("out of memory while converting the pixels to float32") from None
    nodata = ~np.isfinite(bands)  # also float64 values beyond float32's range
    nodata |= _equals_nodata(raw, nodata_value)
    bands[nodata] = np.nan
    return bands, _compact(nodata)


def _compact(nodata: np.ndarray) -> np.ndarray:
    """No nodata at all: a read-only view of one False instead (a full scene's bool array is 336 MB)."""
    return nodata if nodata.any() else np.broadcast_to(np.False_, nodata.shape)


def _equals_nodata(raw: np.ndarray, nodata_value: float | None) -> np.ndarray:
    """Pixels holding the declared nodata value, compared in the file's own dtype."""
    if nodata_value is None or not np.isfinite(nodata_value):
        return np.zeros(raw.shape, bool)
    if raw.dtype.kind == "f":
        return raw == raw.dtype.type(nodata_value)
    if raw.dtype.kind == "b":
        return raw == bool(nodata_value) if nodata_value in (0, 1) else np.zeros(raw.shape, bool)
    info = np.iinfo(raw.dtype)
    if nodata_value != int(nodata_value) or not info.min <= nodata_value <= info.max:
        return np.zeros(raw.shape, bool)  # a value the dtype cannot hold marks nothing
    return raw == int(nodata_value)


def _landsat_files(folder: Path) -> tuple[dict[str, Path], list[tuple[str, Path]], tuple[Path, ...]]:
    """(every band file by band name, the bands of the scene in order, every file the scene is read from)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise SceneError(f"{folder}: cannot list the folder ({_os_problem(err)})") from None
    files = {}
    others = []
    for f in entries:
        match = BAND_FILE.search(f.name)
        if match and f.is_file():
            files[match.group(1).upper()] = f
        elif PRODUCT_FILE.search(f.name) and f.is_file():
            others.append(f)
    if not files:
        raise SceneError(f"{folder}: no Landsat band files (*_B1.TIF, *_B2.TIF, …) in this folder")
    ordered = sorted(files.items(), key=lambda kv: _band_order(kv[0]))
    shapes = {name: _read_tiff(f, pixels=False)["shape"][1:] for name, f in ordered}
    common = max(set(shapes.values()), key=list(shapes.values()).count)
    bands = []
    for name, f in ordered:
        if shapes[name] != common and name in PANCHROMATIC:
            continue  # the pan band has twice the resolution; it cannot share a C×H×W stack
        if shapes[name] != common:
            shape = shapes[name]
            raise SceneError(
                f"{f}: band {name} is {shape[1]}×{shape[0]} pixels but the other bands are "
                f"{common[1]}×{common[0]}; all bands of a scene must have the same size")
        bands.append((name, f))
    return files, bands, tuple(f for _, f in ordered) + tuple(others)


def _read_landsat_folder(folder: Path) -> Scene:
    _, band_files, sources = _landsat_files(folder)
    parts, nodata_parts, names, dtypes, first = [], [], [], [], None
    for name, f in band_files:
        raw = _read_tiff(f)
        first = first or {k: v for k, v in raw.items() if k != "data"}
        bands, nodata = _float_bands(raw["data"], raw["nodata_value"])
        parts.append(bands)
        nodata_parts.append(nodata)
        dtypes.append(raw["data"].dtype)
        names += [name] if len(bands) == 1 else [f"{name} {i + 1}" for i in range(len(bands))]
        del raw
    bands = np.concatenate(parts) if len(parts) > 1 else parts[0]
    nodata = _compact(np.concatenate(nodata_parts)) if len(nodata_parts) > 1 else nodata_parts[0]
    if nodata.all():
        raise SceneError(f"{folder}: every pixel is nodata; there is nothing to fill from")
    return Scene(bands, names, nodata, first["geo_tags"], first["nodata_value"], str(np.result_type(*dtypes)),
                 folder, sources, first["metadata"])


def _band_order(name: str) -> tuple[int, str]:
    return int(re.match(r"B(\d+)", name).group(1)), name


# --- writing ---------------------------------------------------------------------------------------

def write_scene(scene: Scene, path: str | os.PathLike, *, nodata_value: float | None = None,
                protect: tuple[str | os.PathLike, ...] = (), metadata: dict[str, object] | None = None) -> Path:
    """Write scene.bands as a float32 GeoTIFF with the scene's georeferencing.

    Never writes over any file the scene was read from (`scene.sources`) or any path in `protect`;
    writes to a temporary name first and renames, so a file that exists is always complete. NaN pixels
    are nodata (GDAL_NODATA 'nan'), or `nodata_value` when given. The source's GDAL_METADATA items go
    along (band names are the scene's); `metadata` adds items (provenance).
    """
    data = np.asarray(scene.bands, dtype=np.float32)
    if nodata_value is not None:
        data = np.where(np.isnan(data), np.float32(nodata_value), data)
    return write_bands(path, data, like=scene, names=scene.band_names, nodata_value=nodata_value,
                       metadata=metadata, protect=protect)


def write_bands(path: str | os.PathLike, data: np.ndarray, *, like: Scene | None = None,
                names: list[str] | None = None, nodata_value: float | None = None,
                metadata: dict[str, object] | None = None, protect=(), keep_roles=("scale", "offset", "unittype"),
                ) -> Path:
    """Write C×H×W (or H×W) `data` in its own pixel type with the georeferencing and metadata of `like`.

    Float data declare NaN as nodata unless `nodata_value` is given; integer data declare `nodata_value`
    when given. Atomic (temporary name, then rename); refuses any source of `like` and `protect`.
    """
    path = Path(path)
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    extratags = _checked_output_tags(path, len(data), data.dtype, like, names, nodata_value, metadata, protect,
                                     keep_roles)
    return _write_atomic(path, np.ascontiguousarray(data), extratags)


def _checked_output_tags(path: Path, count: int, dtype: np.dtype, like: Scene | None, names, nodata_value,
                         metadata, protect, keep_roles) -> list:
    """What `write_bands` and `TiffStream` do before writing: refuse `path` if it is a source of `like` or in
    `protect`, then the output's tags (float data declare NaN as nodata unless `nodata_value` is given)."""
    sources = [Path(p) for p in protect if p is not None]
    if like is not None:
        sources += list(like.sources) + ([Path(like.path)] if like.path is not None else [])
    check_output_path(path, sources)
    if nodata_value is None and dtype.kind == "f":
        nodata_text = "nan"
    elif nodata_value is not None:
        nodata_text = _nodata_text(nodata_value, dtype)
    else:
        nodata_text = None
    return output_tags(like, names or [f"band {i + 1}" for i in range(count)], nodata_text, metadata,
                       keep_roles=keep_roles)


def _nodata_text(value: float, dtype: np.dtype) -> str:
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if dtype.kind in "uib" and float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def output_tags(like: Scene | None, names: list[str], nodata_text: str | None,
                metadata: dict[str, object] | None = None, keep_roles=("scale", "offset", "unittype")) -> list:
    """The GeoTIFF tags of an output (georeferencing, GDAL metadata with band names and `metadata` items,
    GDAL_NODATA), every string 7-bit ASCII: call it before a long computation to find a tag that
    cannot be written before the work, not after."""
    tags = []
    for code, value in sorted((like.geo_tags if like is not None else {}).items()):
        try:
            tags.append(_geo_extratag(code, value))
        except SceneError as err:
            raise SceneError(f"{like.path}: {err}" if like.path is not None else str(err)) from None
    source = like.gdal_metadata if like is not None else None
    tags.append((GDAL_METADATA, "s", 0, gdal_metadata_xml(names, source, metadata, keep_roles), True))
    if nodata_text is not None:
        tags.append((GDAL_NODATA, "s", 0, nodata_text, True))
    return tags


def _geo_extratag(code: int, value):
    name = GEO_TAGS.get(code, str(code))
    if isinstance(value, (str, bytes)):
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        # GeoTIFF strings are ASCII; anything else goes as UTF-8 bytes (GDAL reads them as such)
        return (code, "s", 0, text if text.isascii() else text.encode("utf-8"), True)
    numbers = _numbers(value)
    if numbers is None or not numbers:
        raise SceneError(f"the source's {name} tag ({_short(ValueError(repr(value)))}) cannot be written back")
    if code == 34735:
        if not all(float(v).is_integer() and 0 <= v <= 65535 for v in numbers):
            raise SceneError(f"the source's {name} tag holds values that are not 16-bit keys; cannot write it back")
        return (code, "H", len(numbers), tuple(int(v) for v in numbers), True)
    return (code, "d", len(numbers), tuple(numbers), True)


def gdal_metadata_xml(names: list[str], source: str | None = None, metadata: dict[str, object] | None = None,
                      keep_roles=("scale", "offset", "unittype")) -> str:
    """GDAL_METADATA for an output: the source's items (not its band names, provenance or statistics, which
    are stale), then `metadata` items, then the band descriptions; 7-bit ASCII (other characters escaped)."""
    root = ET.Element("GDALMetadata")
    old = _metadata_root(source)
    for item in (old.iter("Item") if old is not None else ()):
        role, name = item.get("role"), item.get("name") or ""
        if role == "description" or (role is not None and role not in keep_roles):
            continue
        if name.upper().startswith(PROVENANCE_PREFIX) or STALE_METADATA.match(name):
            continue
        kept = ET.SubElement(root, "Item", dict(item.attrib))
        kept.text = item.text
    for key, value in (metadata or {}).items():
        if value is None:
            continue
        item = ET.SubElement(root, "Item", {"name": f"{PROVENANCE_PREFIX}{key}".upper()})
        item.text = _xml_safe(str(value))
    for i, band in enumerate(names):
        item = ET.SubElement(root, "Item", {"name": "DESCRIPTION", "sample": str(i), "role": "description"})
        item.text = _xml_safe(str(band))
    return ET.tostring(root, encoding="us-ascii").decode("ascii")


def _xml_safe(text: str) -> str:
    """Characters XML 1.0 cannot hold at all (controls) become '?'; the rest is escaped by the serialiser."""
    return "".join(c if c in "\t\n\r" or (" " <= c and c not in "\ufffe\uffff") else "?" for c in text)


def check_output_path(path: str | os.PathLike, sources=(), *, tiff: bool = True) -> Path:
    """Refuse an output that cannot be written, before any work: not a .tif (unless `tiff` is False: a
    checkpoint, scores), one of `sources` (the inputs), an existing folder, in a folder
    that does not exist, is a file, or cannot be written to (a probe file is created and removed). The one
    check every output of every command goes through."""
    path = Path(check_path(path, "the output", SceneError))
    for src in sources:
        if same_file(path, src):
            raise SceneError(f"{path}: refusing to overwrite the input file {src}; choose another output name")
    if tiff and path.suffix.lower() not in TIFF_SUFFIXES:
        raise SceneError(f"{path}: output must be a .tif/.tiff file")
    if path.is_dir():
        raise SceneError(f"{path}: the output is an existing folder; give a file name")
    parent = path.parent
    if not parent.exists():
        if _first_existing(parent).is_file():
            raise SceneError(f"{path}: its folder {parent} is inside a file, not a folder")
        raise SceneError(f"{path}: its folder {parent} does not exist")
    if not parent.is_dir():
        raise SceneError(f"{path}: its folder {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as err:
        raise SceneError(f"{path}: cannot write in its folder {parent} ({_os_problem(err)})") from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return path


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def file_identity(path: str | os.PathLike):
    """What makes two paths one file, as a key: device and inode where it exists (links and symbolic links
    followed), else the real path."""
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.normcase(os.path.realpath(path))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (links and symbolic links followed; either may not exist yet)."""
    return file_identity(a) == file_identity(b)


def partial_names(path: Path) -> re.Pattern:
    """Names of this writer's temporary files for `path` (and of older versions of it)."""
    return re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.partial|"
                      rf"\.{re.escape(path.stem)}\.[A-Za-z0-9_]{{8}}\.tif\.partial")


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove temporary files of earlier writes of `path` whose writer is gone (killed): a live writer
    holds a lock on its temporary file, so only abandoned ones go. Returns what was removed."""
    import fcntl

    pattern = partial_names(path)
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a writer still works on it
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _umask() -> int:
    value = _proc_field("/proc/self/status", "Umask:")
    try:
        if value is not None:
            return int(value, 8)
    except ValueError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, data: np.ndarray, extratags: list) -> Path:
    import fcntl

    remove_stale_partials(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as err:
        raise SceneError(f"{path}: cannot write in its folder {path.parent} ({_os_problem(err)})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # tells a later writer this temporary file is alive
        os.fchmod(fd, 0o666 & ~_umask())  # as a plain open() would create it (mkstemp makes 0600)
        layout = {"planarconfig": "separate"} if len(data) > 1 else {}
        tifffile.imwrite(tmp, data if len(data) > 1 else data[0], photometric="minisblack", compression="zlib",
                         compressionargs={"level": DEFLATE_LEVEL}, extratags=extratags, metadata=None, **layout)
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, MemoryError):
            raise SceneError(f"{path}: out of memory while writing it") from None
        if isinstance(err, OSError):
            raise SceneError(f"{path}: cannot write it ({_os_problem(err)}); nothing was written") from None
        raise
    finally:
        os.close(fd)
    return path


# --- streamed writing ------------------------------------------------------------------------------

STREAM_TILE = 256  # pixels per side of the tiles of a streamed GeoTIFF


DEFLATE_LEVEL = 1  # 2.5× the speed of the usual level 6 on filled float32 bands, for files about 9 % larger


def _deflate():
    try:
        import imagecodecs

        return lambda data: imagecodecs.deflate_encode(data, level=DEFLATE_LEVEL)  # libdeflate: same format, faster
    except (ImportError, AttributeError):
        import zlib

        return lambda data: zlib.compress(data, DEFLATE_LEVEL)


class TiffStream:
    """A tiled GeoTIFF written as bands of rows arrive, top to bottom, so that a scene's result never has to
    be in memory whole.

    Takes what `write_bands` takes, with the C×H×W `shape` and pixel `dtype` in place of the data, and
    writes the same file as it would (one plane per band, deflate, tags), in 256×256-pixel tiles. Each
    full row of tiles is compressed as it arrives into an unnamed scratch file beside the output; `close()`
    writes the TIFF under a temporary name (locked, mode as open() would give) from those compressed tiles,
    in the file's plane-by-plane order; `commit()` renames it to its name, `abort()` removes it.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], dtype, *, like: Scene | None = None,
                 names: list[str] | None = None, nodata_value: float | None = None,
                 metadata: dict[str, object] | None = None, protect=(),
                 keep_roles=("scale", "offset", "unittype")):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._extratags = _checked_output_tags(self.path, self.shape[0], self.dtype, like, names, nodata_value,
                                               metadata, protect, keep_roles)
        self._fd = self._tmp = None
        try:
            self._spool = tempfile.TemporaryFile(prefix=f".{self.path.name}.", suffix=".tiles", dir=self.path.parent)
        except OSError as err:
            raise SceneError(f"{self.path}: cannot write in its folder {self.path.parent} "
                             f"({_os_problem(err)})") from None
        self._chunks: list[tuple[int, int]] = []  # (offset, length) in the spool, in the order of arrival
        self._pending: list[np.ndarray] = []  # rows not yet a full row of tiles
        self._rows = 0  # rows received
        self._encode = _deflate()

    def write(self, rows: np.ndarray) -> None:
        """The next C×n×W rows (converted to the stream's pixel type)."""
        rows = np.asarray(rows)
        if rows.ndim == 2:
            rows = rows[None]
        c, h, w = self.shape
        if rows.shape[0] != c or rows.shape[2] != w or self._rows + rows.shape[1] > h:
            raise SceneError(f"{self.path}: rows of shape {rows.shape} do not fit rows {self._rows}.. of {self.shape}")
        if rows.dtype != self.dtype:
            with np.errstate(over="ignore", invalid="ignore"):
                rows = rows.astype(self.dtype)
        self._rows += rows.shape[1]
        self._pending.append(rows)
        pending = sum(p.shape[1] for p in self._pending)
        if pending < STREAM_TILE and self._rows < h:
            return
        block = np.concatenate(self._pending, axis=1) if len(self._pending) > 1 else self._pending[0]
        done = 0
        while pending - done >= STREAM_TILE or (done < pending and self._rows == h):
            n = min(STREAM_TILE, pending - done)
            self._encode_rows(block[:, done:done + n])
            done += n
        rest = block[:, done:].copy()  # a copy: a view would keep the whole block alive
        self._pending = [rest] if rest.shape[1] else []

    def _encode_rows(self, block: np.ndarray) -> None:
        """One row of tiles, every band: compressed into the spool (band, then column order)."""
        size = STREAM_TILE
        c, n, w = block.shape
        tiles = []
        for b in range(c):
            for x in range(0, w, size):
                tile = np.zeros((size, size), self.dtype)  # edge tiles padded, as TIFF wants
                part = block[b, :, x:x + size]
                tile[:n, :part.shape[1]] = part
                tiles.append(tile)
        try:
            encoded = list(_worker_threads().map(lambda t: self._encode(t.tobytes()), tiles))
            for data in encoded:
                self._chunks.append((self._spool.tell(), len(data)))
                self._spool.write(data)
        except MemoryError:
            raise SceneError(f"{self.path}: out of memory while writing it") from None
        except OSError as err:
            raise SceneError(f"{self.path}: cannot write it ({_os_problem(err)}); nothing was written") from None

    def _tiles_in_file_order(self):
        c, h, w = self.shape
        across, down = -(-w // STREAM_TILE), -(-h // STREAM_TILE)
        for b in range(c):
            for y in range(down):
                for x in range(across):
                    offset, length = self._chunks[(y * c + b) * across + x]
                    self._spool.seek(offset)
                    yield self._spool.read(length)

    def close(self) -> None:
        """Write the file under its temporary name once every row has come; raises what went wrong."""
        import fcntl

        c, h, w = self.shape
        if self._rows != h:
            raise SceneError(f"{self.path}: {self._rows} of {h} rows were written")
        remove_stale_partials(self.path)
        try:
            self._fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial",
                                                   dir=self.path.parent)
        except OSError as err:
            raise SceneError(f"{self.path}: cannot write in its folder {self.path.parent} "
                             f"({_os_problem(err)})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # tells a later writer this temporary file is alive
            os.fchmod(self._fd, 0o666 & ~_umask())  # as a plain open() would create it (mkstemp makes 0600)
            layout = {"planarconfig": "separate"} if c > 1 else {}
            tifffile.imwrite(self._tmp, data=self._tiles_in_file_order(), shape=(c, h, w) if c > 1 else (h, w),
                             dtype=self.dtype, tile=(STREAM_TILE, STREAM_TILE), photometric="minisblack",
                             compression="zlib", extratags=self._extratags, metadata=None, **layout)
            os.fsync(self._fd)
        except BaseException as err:
            self.abort()
            if isinstance(err, MemoryError):
                raise SceneError(f"{self.path}: out of memory while writing it") from None
            if isinstance(err, OSError):
                raise SceneError(f"{self.path}: cannot write it ({_os_problem(err)}); nothing was written") from None
            raise
        self._spool.close()

    def commit(self) -> Path:
        """Rename the complete file to its name (after `close`)."""
        try:
            os.replace(self._tmp, self.path)
        except OSError as err:
            self.abort()
            raise SceneError(f"{self.path}: cannot write it ({_os_problem(err)}); nothing was written") from None
        self._release()
        return self.path

    def abort(self) -> None:
        """Remove what was written (safe to call more than once)."""
        self._spool.close()
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_stream(path: str | os.PathLike, data: np.ndarray, rows: int = STREAM_TILE, **options) -> TiffStream:
    """A C×H×W array written through a TiffStream `rows` rows at a time (a bool mask goes as uint8); returns
    the closed stream, to be committed."""
    data = data[None] if data.ndim == 2 else data
    dtype = np.uint8 if data.dtype == bool else data.dtype
    stream = TiffStream(path, data.shape, dtype, **options)
    try:
        for r in range(0, data.shape[1], rows):
            stream.write(data[:, r:r + rows].astype(dtype))
        stream.close()
    except BaseException:
        stream.abort()
        raise
    return stream
