"""Reading TIFF files: the first image of a GeoTIFF as C×H×W in its own pixel type with its tags, whole or
decoded window by window (`TiffPixels`) on every core; whatever tifffile, its codecs or the OS raise on the way
becomes one SceneError line naming the file."""
from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import tifffile

from .errors import SceneError
from .georef import GEO_TAGS
from .landsat import zero_is_fill
from .system import check_memory
from .views import EXACT_IN_FLOAT32, BandWindows, basic_index, index_span

GDAL_METADATA = 42112
GDAL_NODATA = 42113
TIFF_SUFFIXES = (".tif", ".tiff")


class _TifffileLog(logging.Filter):
    """tifffile logs (and goes on) where a file is odd; `read_tiff` turns what matters into a SceneError,
    so these records are only noise on stderr: a GDAL_NODATA text that does not fit the pixel type
    ('0.0' in a uint8 file) always, anything while this module reads a file."""

    quiet = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self.quiet, "on", False):
            return False
        return "GDAL_NODATA" not in record.getMessage()


_TIFFFILE_LOG = _TifffileLog()
logging.getLogger("tifffile").addFilter(_TIFFFILE_LOG)


def read_tiff(path: Path, pixels: bool = True, windowed: bool = False) -> dict:
    """The first image of a TIFF as C×H×W in its own type, with its tags (pixels=False: shape only;
    windowed: a `TiffPixels` where the file allows, with the nodata pixels under "nodata")."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise SceneError(f"{path}: cannot read it ({os_problem(err)})") from None
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
        nodata_value = _parse_nodata(nodata_text)
        names = _band_names_from_metadata(metadata, shape[0])
        if nodata_value is None and zero_is_fill(path, dtype, names or ()):
            nodata_value = 0.0  # a USGS band's fill: 0, untagged
        if windowed and dtype.kind in "ui" and dtype.str in EXACT_IN_FLOAT32 and TiffPixels.fits(series):
            check_memory(int(np.prod(series.shape)), f"{path}: reading")  # at most a nodata bool per pixel
            data = TiffPixels(path, shape, dtype)
            nodata = data.scan(nodata_value)  # every block decoded once now: bad input fails here
        else:
            check_memory(int(np.prod(series.shape)) * (dtype.itemsize + 5), f"{path}: reading")
            data = series.asarray()
    if isinstance(data, np.ndarray):
        data = data.reshape(shape) if data.ndim == 2 else _to_bands_first(data, series.axes, path)
    return {"data": data, "names": names, "geo_tags": geo_tags, "nodata_value": nodata_value,
            "metadata": metadata_text(metadata), "nodata": nodata}


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
            raise SceneError(f"{path}: not a readable TIFF file, or a damaged one ({one_line(err)})") from None
        if isinstance(err, MemoryError):
            raise SceneError(f"{path}: out of memory while reading it; use a smaller crop or a machine with "
                             "more memory") from None
        if isinstance(err, PermissionError):
            raise SceneError(f"{path}: cannot read it ({os_problem(err)})") from None
        if isinstance(err, OSError):
            if err.errno in (errno.EIO, errno.ENOMEM, errno.EISDIR):
                raise SceneError(f"{path}: cannot read it ({os_problem(err)})") from None
            raise SceneError(f"{path}: the TIFF is damaged or truncated ({one_line(err)})") from None
        if isinstance(err, (ValueError, EOFError, KeyError, IndexError, TypeError, RuntimeError, struct.error)):
            if "imagecodecs" in str(err) and "returned" not in str(err):
                raise SceneError(f"{path}: its compression needs the package imagecodecs ({one_line(err)})") from None
            # the codecs (imagecodecs' DeflateError, ZstdError, JpegError, …) are RuntimeErrors
            raise SceneError(f"{path}: the TIFF is damaged or truncated: its pixels do not decode "
                             f"({type(err).__name__}: {one_line(err)})") from None
        return False


_THREADS = {}  # the process's threads that decode and compress blocks (the codecs release the GIL), made when needed
_THREADS_LOCK = threading.Lock()


def _forget_threads():
    """In a forked child: none of the parent's threads came along, and the lock may have been held."""
    global _THREADS_LOCK
    _THREADS.clear()
    _THREADS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_threads)


def worker_threads():
    from concurrent.futures import ThreadPoolExecutor

    with _THREADS_LOCK:
        if "pool" not in _THREADS:
            _THREADS["pool"] = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="codec")
        return _THREADS["pool"]


class TiffPixels(BandWindows):
    """The pixels of a one-image TIFF as stored (C×H×W), decoded strip by strip (or tile by tile) when
    indexed, so that a file-to-file fill never holds the whole input. The last block decoded is kept:
    the fill reads a row of tiles window by window, then the same rows again to write them. With `whole_rows`
    False only the tiles under the columns asked for are decoded: napari showing part of a scene zoomed in."""

    ndim = 3

    def __init__(self, path: Path, shape: tuple[int, int, int], dtype: np.dtype):
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.size = int(np.prod(shape))
        stat = path.stat()
        self._stamp = (stat.st_size, stat.st_mtime_ns)  # a file changed under the fill is an error, not a picture
        self._cache = ((0, 0, 0, 0, 0, 0), None)  # ((first band, last band + 1, first row, last row + 1,
        # first column, last column + 1), pixels)
        self.whole_rows = True

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
        col_range = range(self.shape[2])[cols]
        narrow = not self.whole_rows and not (isinstance(col_range, range) and col_range.step != 1)
        c0, c1 = index_span(col_range) if narrow else (0, self.shape[2])
        (cb0, cb1, cr0, cr1, cc0, cc1), pixels = self._cache
        if pixels is None or not (cb0 <= b0 and b1 <= cb1 and cr0 <= r0 and r1 <= cr1 and cc0 <= c0 and c1 <= cc1):
            pixels = self._decode(b0, b1, r0, r1, c0, c1)
            cb0, cb1, cr0, cr1, cc0, cc1 = b0, b1, r0, r1, c0, c1
            self._cache = ((cb0, cb1, cr0, cr1, cc0, cc1), pixels)
        local_bands = band_range - cb0 if isinstance(band_range, int) else slice(b0 - cb0, b1 - cb0)
        local_rows = row_range - cr0 if isinstance(row_range, int) else slice(r0 - cr0, r1 - cr0)
        if narrow:
            cols = col_range - cc0 if isinstance(col_range, int) else slice(c0 - cc0, c1 - cc0)
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
            equal = equals_nodata(pixels, nodata_value)
            if equal.any():
                if nodata is None:
                    nodata = np.zeros(self.shape, bool)
                nodata[:, r0:r0 + step] = equal[:, :min(h, r0 + step) - r0]
        if nodata is None:
            return np.broadcast_to(np.False_, self.shape)
        return nodata

    def _decode(self, b0: int, b1: int, r0: int, r1: int, c0: int = 0, c1: int | None = None) -> np.ndarray:
        """Bands b0…b1−1, rows r0…r1−1, columns c0…c1−1 (every column by default), in the file's type."""
        c, h, w = self.shape
        c1 = w if c1 is None else c1
        out = np.zeros((b1 - b0, r1 - r0, c1 - c0), self.dtype)
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
                      for y in range(r0 // length, -(-r1 // length)) for x in range(c0 // width, -(-c1 // width))]
            offsets, counts = page.dataoffsets, page.databytecounts
            read = tif.filehandle.read_segments([offsets[i] for i in wanted], [counts[i] for i in wanted],
                                                indices=wanted, sort=True)
            # decoded on every core (the codecs release the GIL), in the order read
            decoded = worker_threads().map(lambda item: page.decode(*item, jpegtables=page.jpegtables), list(read))
            for segment, (plane, _, y, x, _), _ in decoded:
                if segment is None:
                    continue  # a block the file leaves out reads as 0, as tifffile does
                rows = slice(max(y, r0), min(y + segment.shape[1], r1, h))
                cols = slice(max(x, c0), min(x + segment.shape[2], c1, w))
                if rows.start >= rows.stop or cols.start >= cols.stop:
                    continue
                part = segment[0, rows.start - y:rows.stop - y, cols.start - x:cols.stop - x]
                into = (slice(rows.start - r0, rows.stop - r0), slice(cols.start - c0, cols.stop - c0))
                if separate:
                    out[(plane - b0, *into)] = part[..., 0]
                else:
                    out[(slice(None), *into)] = np.moveaxis(part[..., b0:b1], -1, 0)
        return out


def _block_length(page, height: int) -> int:
    """Rows of a TIFF page's strips or tiles."""
    return page.tilelength if page.is_tiled else min(page.rowsperstrip or height, height)



def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] + ("…" if len(text) > 200 else "")


def os_problem(err: OSError) -> str:
    if isinstance(err, PermissionError):
        return "permission denied"
    if err.errno == errno.ENOMEM:
        return "out of memory"
    return err.strerror or one_line(err)


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


def metadata_text(metadata) -> str | None:
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


PROVENANCE_PREFIX = "CONVNP_"  # GDAL metadata items this package writes: what made a file, from what


def provenance_items(metadata) -> dict[str, str]:
    """The CONVNP_ items of GDAL metadata XML (what wrote a file, from what), without the prefix."""
    root = metadata_root(metadata)
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


def metadata_root(metadata) -> ET.Element | None:
    """GDAL's metadata XML as an element, or None when there is none or it is not well-formed (GDAL
    itself then ignores it, and so does this reader: the scene reads with default band names)."""
    text = metadata_text(metadata)
    if not text:
        return None
    try:
        root = ET.fromstring(text)
    except (ET.ParseError, ValueError):
        return None
    return root if root.tag == "GDALMetadata" else None


def _band_names_from_metadata(metadata, count: int) -> list[str] | None:
    """Band descriptions from GDAL's metadata XML (written by GDAL and by our writer)."""
    root = metadata_root(metadata)
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



def equals_nodata(raw: np.ndarray, nodata_value: float | None) -> np.ndarray:
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

