"""Reading and writing Landsat scenes: GeoTIFF files and Landsat product folders.

Knows TIFF and Landsat naming; knows nothing of napari or torch.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tifffile

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
PANCHROMATIC = {"B8"}  # 15 m band of Landsat 7/8: twice the size of the others


class _NodataTagNoise(logging.Filter):
    """tifffile warns when a GDAL_NODATA text does not fit the pixel type ('0.0' in a uint8 file,
    -3.4e+38 in float32); `_parse_nodata` reads that text itself, so the warning is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "GDAL_NODATA" not in record.getMessage()


logging.getLogger("tifffile").addFilter(_NodataTagNoise())


class SceneError(ValueError):
    """A scene file or folder that cannot be read or written; the message names the file and the problem."""


@dataclass
class Scene:
    """One Landsat scene in memory.

    bands: C×H×W float32, nodata pixels set to NaN so no fill value leaks into statistics.
    nodata: C×H×W bool, True where the file declared no data (nodata tag or NaN).
    geo_tags: raw GeoTIFF tag values by tag code, written back unchanged.
    """

    bands: np.ndarray
    band_names: list[str]
    nodata: np.ndarray
    geo_tags: dict[int, object] = field(default_factory=dict)
    nodata_value: float | None = None
    source_dtype: str = "float32"
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.bands.shape

    @property
    def name(self) -> str:
        return self.path.stem if self.path else "scene"

    @property
    def pixel_size(self) -> float | None:
        """Ground size of a pixel in map units (metres for UTM), when the file says so."""
        scale = self.geo_tags.get(33550)
        if scale and float(scale[0]) > 0:
            return float(scale[0])
        transform = self.geo_tags.get(34264)
        if transform and float(transform[0]) != 0:
            return abs(float(transform[0]))
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


def available_memory() -> int:
    """Bytes of memory the system can still hand out (MemAvailable), or a huge number if unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def check_memory(needed: int, what: str) -> None:
    """Fail early, with the sizes named, instead of being killed half-way by the kernel."""
    available = available_memory()
    if needed > available:
        raise SceneError(f"{what} needs about {needed / 2**30:.1f} GiB of memory but only "
                         f"{available / 2**30:.1f} GiB is free; use a smaller crop or a machine with more memory")


def read_scene(path: str | os.PathLike) -> Scene:
    """Read a GeoTIFF file or a Landsat product folder (per-band *_B<n>.TIF files)."""
    path = Path(path)
    if not path.exists():
        raise SceneError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_landsat_folder(path)
    return _read_tiff(path)


def _read_tiff(path: Path) -> Scene:
    if path.stat().st_size == 0:
        raise SceneError(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise SceneError(f"{path}: not a GeoTIFF (expected a .tif/.tiff file, got '{path.suffix}')")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            check_memory(int(np.prod(series.shape)) * (series.dtype.itemsize + 5), f"{path}: reading")
            data = series.asarray()
            axes = series.axes
            tags = tif.pages[0].tags
            geo_tags = {code: tags[code].value for code in GEO_TAGS if code in tags}
            nodata_text = tags[GDAL_NODATA].value if GDAL_NODATA in tags else None
            metadata = tags[GDAL_METADATA].value if GDAL_METADATA in tags else None
    except tifffile.TiffFileError as err:
        raise SceneError(f"{path}: not a readable TIFF file ({err})") from None
    except (ValueError, OSError, EOFError, KeyError, IndexError) as err:
        if "imagecodecs" in str(err):
            raise SceneError(f"{path}: its compression needs the package imagecodecs ({err})") from None
        raise SceneError(f"{path}: the TIFF is damaged or truncated ({err})") from None
    bands = _to_bands_first(data, axes, path)
    names = _band_names_from_metadata(metadata, len(bands)) or [f"band {i + 1}" for i in range(len(bands))]
    return _make_scene(bands, names, geo_tags, _parse_nodata(nodata_text), path)


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
    try:
        return float(str(text).strip().strip("\x00"))
    except ValueError:
        return None


def _band_names_from_metadata(metadata, count: int) -> list[str] | None:
    """Band descriptions from GDAL's metadata XML (written by GDAL and by our writer)."""
    if not metadata:
        return None
    try:
        root = ET.fromstring(str(metadata).strip("\x00"))
    except ET.ParseError:
        return None
    names = {}
    for item in root.iter("Item"):
        if item.get("role") == "description" and item.get("sample") is not None:
            names[int(item.get("sample"))] = (item.text or "").strip()
    if len(names) != count:
        return None
    return [names[i] or f"band {i + 1}" for i in range(count)]


def _make_scene(raw: np.ndarray, names, geo_tags, nodata_value, path: Path) -> Scene:
    bands = raw.astype(np.float32)
    nodata = ~np.isfinite(bands)
    nodata |= _equals_nodata(raw, nodata_value)
    bands[nodata] = np.nan
    if nodata.all():
        raise SceneError(f"{path}: every pixel is nodata; there is nothing to fill from")
    return Scene(bands, list(names), nodata, geo_tags, nodata_value, str(raw.dtype), path)


def _equals_nodata(raw: np.ndarray, nodata_value: float | None) -> np.ndarray:
    """Pixels holding the declared nodata value, compared in the file's own dtype."""
    if nodata_value is None or not np.isfinite(nodata_value):
        return np.zeros(raw.shape, bool)
    if raw.dtype.kind == "f":
        return raw == raw.dtype.type(nodata_value)
    info = np.iinfo(raw.dtype)
    if nodata_value != int(nodata_value) or not info.min <= nodata_value <= info.max:
        return np.zeros(raw.shape, bool)  # a value the dtype cannot hold marks nothing
    return raw == int(nodata_value)


def _read_landsat_folder(folder: Path) -> Scene:
    files = {}
    for f in sorted(folder.iterdir()):
        match = BAND_FILE.search(f.name)
        if match and f.is_file():
            files[match.group(1).upper()] = f
    if not files:
        raise SceneError(f"{folder}: no Landsat band files (*_B1.TIF, *_B2.TIF, …) in this folder")
    scenes = {name: _read_tiff(f) for name, f in sorted(files.items(), key=lambda kv: _band_order(kv[0]))}
    shapes = {name: s.shape[1:] for name, s in scenes.items()}
    common = max(set(shapes.values()), key=list(shapes.values()).count)
    for name, shape in list(shapes.items()):
        if shape != common and name in PANCHROMATIC:
            del scenes[name]  # the pan band has twice the resolution; it cannot share a C×H×W stack
        elif shape != common:
            raise SceneError(
                f"{files[name]}: band {name} is {shape[1]}×{shape[0]} pixels but the other bands are "
                f"{common[1]}×{common[0]}; all bands of a scene must have the same size")
    first = next(iter(scenes.values()))
    bands = np.concatenate([s.bands for s in scenes.values()])
    nodata = np.concatenate([s.nodata for s in scenes.values()])
    return Scene(bands, list(scenes), nodata, first.geo_tags, first.nodata_value, first.source_dtype, folder)


def _band_order(name: str) -> tuple[int, str]:
    return int(re.match(r"B(\d+)", name).group(1)), name


def write_scene(scene: Scene, path: str | os.PathLike, *, nodata_value: float | None = None,
                protect: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Write scene.bands as a float32 GeoTIFF with the scene's georeferencing.

    Never writes over the scene's own source file or any path in `protect`; writes to a temporary
    name first and renames, so a file that exists is always complete.
    """
    path = Path(path)
    sources = [p for p in (scene.path, *protect) if p is not None]
    for src in sources:
        if Path(src).exists() and path.exists() and path.resolve() == Path(src).resolve():
            raise SceneError(f"{path}: refusing to overwrite the input file; choose another output name")
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise SceneError(f"{path}: output must be a .tif/.tiff file")
    if not path.parent.exists():
        raise SceneError(f"{path.parent}: output folder does not exist")
    if not os.access(path.parent, os.W_OK):
        raise SceneError(f"{path.parent}: output folder is not writable")
    data = np.ascontiguousarray(scene.bands, dtype=np.float32)
    if nodata_value is not None:
        data = np.where(np.isnan(data), np.float32(nodata_value), data)
    extratags = [_geo_extratag(code, value) for code, value in sorted(scene.geo_tags.items())]
    extratags.append((GDAL_METADATA, "s", 0, _band_metadata(scene.band_names), True))
    if nodata_value is not None:
        extratags.append((GDAL_NODATA, "s", 0, repr(float(nodata_value)), True))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tif.partial", dir=path.parent)
    os.close(fd)
    try:
        layout = {"planarconfig": "separate"} if len(data) > 1 else {}
        tifffile.imwrite(tmp, data if len(data) > 1 else data[0], photometric="minisblack",
                         compression="zlib", extratags=extratags, metadata=None, **layout)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _geo_extratag(code: int, value):
    if code == 34737:
        return (code, "s", 0, str(value), True)
    if code == 34735:
        return (code, "H", len(value), tuple(int(v) for v in value), True)
    return (code, "d", len(value), tuple(float(v) for v in value), True)


def _band_metadata(names: list[str]) -> str:
    items = "".join(
        f'<Item name="DESCRIPTION" sample="{i}" role="description">{_xml_escape(n)}</Item>'
        for i, n in enumerate(names))
    return f"<GDALMetadata>{items}</GDALMetadata>"


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
