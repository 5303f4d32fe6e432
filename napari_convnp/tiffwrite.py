"""Writing GeoTIFFs safely: an output's tags (georeferencing, band names, provenance, nodata) settled before
the work, whole files written under a temporary name and renamed (`write_bands`) or streamed tile row by tile
row (`TiffStream`), never over an input; what a killed writer left behind is cleaned up by the next one."""
from __future__ import annotations

import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from .errors import SceneError
from .georef import GEO_KEY_DIRECTORY, GEO_TAGS, tag_numbers
from .options import check_path
from .system import umask
from .tiffread import (
    GDAL_METADATA,
    GDAL_NODATA,
    PROVENANCE_PREFIX,
    TIFF_SUFFIXES,
    metadata_root,
    one_line,
    os_problem,
    worker_threads,
)

if TYPE_CHECKING:
    from .scene import Scene

# GDAL_METADATA items that describe the pixel values of the source and are stale after a fill.
STALE_METADATA = re.compile(r"^STATISTICS_", re.IGNORECASE)


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
    numbers = tag_numbers(value)
    if numbers is None or not numbers:
        raise SceneError(f"the source's {name} tag ({one_line(ValueError(repr(value)))}) cannot be written back")
    if code == GEO_KEY_DIRECTORY:
        if not all(float(v).is_integer() and 0 <= v <= 65535 for v in numbers):
            raise SceneError(f"the source's {name} tag holds values that are not 16-bit keys; cannot write it back")
        return (code, "H", len(numbers), tuple(int(v) for v in numbers), True)
    return (code, "d", len(numbers), tuple(numbers), True)


def gdal_metadata_xml(names: list[str], source: str | None = None, metadata: dict[str, object] | None = None,
                      keep_roles=("scale", "offset", "unittype")) -> str:
    """GDAL_METADATA for an output: the source's items (not its band names, provenance or statistics, which
    are stale), then `metadata` items, then the band descriptions; 7-bit ASCII (other characters escaped)."""
    root = ET.Element("GDALMetadata")
    old = metadata_root(source)
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
        raise SceneError(f"{path}: cannot write in its folder {parent} ({os_problem(err)})") from None
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




def _write_atomic(path: Path, data: np.ndarray, extratags: list) -> Path:
    import fcntl

    remove_stale_partials(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as err:
        raise SceneError(f"{path}: cannot write in its folder {path.parent} ({os_problem(err)})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # tells a later writer this temporary file is alive
        os.fchmod(fd, 0o666 & ~umask())  # as a plain open() would create it (mkstemp makes 0600)
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
            raise SceneError(f"{path}: cannot write it ({os_problem(err)}); nothing was written") from None
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
                             f"({os_problem(err)})") from None
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
            encoded = list(worker_threads().map(lambda t: self._encode(t.tobytes()), tiles))
            for data in encoded:
                self._chunks.append((self._spool.tell(), len(data)))
                self._spool.write(data)
        except MemoryError:
            raise SceneError(f"{self.path}: out of memory while writing it") from None
        except OSError as err:
            raise SceneError(f"{self.path}: cannot write it ({os_problem(err)}); nothing was written") from None

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
                             f"({os_problem(err)})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # tells a later writer this temporary file is alive
            os.fchmod(self._fd, 0o666 & ~umask())  # as a plain open() would create it (mkstemp makes 0600)
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
                raise SceneError(f"{self.path}: cannot write it ({os_problem(err)}); nothing was written") from None
            raise
        self._spool.close()

    def commit(self) -> Path:
        """Rename the complete file to its name (after `close`)."""
        try:
            os.replace(self._tmp, self.path)
        except OSError as err:
            self.abort()
            raise SceneError(f"{self.path}: cannot write it ({os_problem(err)}); nothing was written") from None
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
