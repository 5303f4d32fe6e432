"""Scenes: a GeoTIFF file or a Landsat product folder read as bands, nodata, band names and georeferencing.

The room's other parts live beside it: `tiffread` (TIFF decoding), `tiffwrite` (safe writing), `georef` (the
grid), `landsat` (band and product names), `views` (lazy pixels), `system` (memory). The names other code
imported from here before they moved are still importable from here. Knows nothing of napari or torch.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import SceneError
from .georef import GEO_TAGS, Grid
from .landsat import BAND_FILE, PANCHROMATIC, PRODUCT_FILE, band_file_order
from .options import check_path
from .system import available_memory, check_memory
from .tiffread import (
    GDAL_METADATA,
    GDAL_NODATA,
    PROVENANCE_PREFIX,
    TIFF_SUFFIXES,
    TiffPixels,
    equals_nodata,
    os_problem,
    provenance_items,
    read_provenance,
    read_tiff,
)
from .tiffwrite import (
    DEFLATE_LEVEL,
    STALE_METADATA,
    STREAM_TILE,
    TiffStream,
    check_output_path,
    file_identity,
    gdal_metadata_xml,
    output_tags,
    partial_names,
    remove_stale_partials,
    same_file,
    write_bands,
    write_scene,
    write_stream,
)
from .views import EXACT_IN_FLOAT32, BandWindows, FloatView, basic_index, index_span

__all__ = [  # the names of this module before the split, as other code imports them from here
    "BAND_FILE", "BandWindows", "DEFLATE_LEVEL", "EXACT_IN_FLOAT32", "FloatView", "GDAL_METADATA", "GDAL_NODATA",
    "GEO_TAGS", "PANCHROMATIC", "PRODUCT_FILE", "PROVENANCE_PREFIX", "STALE_METADATA", "STREAM_TILE",
    "TIFF_SUFFIXES", "Scene", "SceneError", "TiffPixels", "TiffStream", "available_memory", "basic_index",
    "check_float32_precision", "check_memory", "check_output_path", "file_identity", "gdal_metadata_xml",
    "index_span", "output_tags", "partial_names", "read_raw", "read_scene", "remove_stale_partials", "same_file",
    "scene_shape", "write_bands", "write_scene", "write_stream",
]


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
    def grid(self) -> Grid | None:
        """Where the pixels lie on the map (transform, CRS, units), or None where the tags do not place them.
        Parsed from `geo_tags` when asked (about 50 µs): a Scene whose tags are replaced never keeps a stale one."""
        return Grid.from_tags(self.geo_tags)

    @property
    def pixel_size(self) -> float | None:
        """Ground size of a pixel in map units (metres for UTM), when the file says so (and sensibly)."""
        grid = self.grid
        return grid.pixel_size if grid is not None else None

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
    raw = read_tiff(path, windowed=lazy_float)
    _check_fill_pair(path, provenance_items(raw["metadata"]))
    return _make_scene(raw["data"], raw["names"], raw["geo_tags"], raw["nodata_value"], path, (path,),
                       raw["metadata"], lazy_float, raw.get("nodata"))


FILLED_MASK_SUFFIX = "_filled_mask"  # `<out stem>_filled_mask.tif`: which pixels of a fill were filled


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


def expand_inputs(inputs: list[str] | str | os.PathLike) -> list[Path]:
    """Files, folders (their .tif files, or the folder itself when it is a Landsat product) and globs; one of
    them alone too (not taken letter by letter)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths: list[Path] = []
    for item in inputs:
        matches = sorted(glob.glob(str(item))) or [item]
        for m in map(Path, matches):
            if m.is_dir() and any(BAND_FILE.search(f.name) for f in m.iterdir()):
                paths.append(m)  # a Landsat product folder is one scene
            elif m.is_dir():
                paths.extend(sorted(f for f in m.iterdir() if f.suffix.lower() in TIFF_SUFFIXES and f.is_file()))
            else:
                paths.append(m)
    unique: dict[str, Path] = {}
    for p in paths:  # one scene named twice (a/../a/s.tif, a link) is filled once
        unique.setdefault(os.path.realpath(p), p)
    return list(unique.values())


def scene_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """C×H×W of a GeoTIFF or a Landsat product folder, from the headers alone (no pixel is read)."""
    path = Path(path)
    if not path.exists():
        raise SceneError(f"{path}: no such file or folder")
    if path.is_dir():
        _, bands, _ = _landsat_files(path)
        return (len(bands), *read_tiff(bands[0][1], pixels=False)["shape"][1:])
    return tuple(read_tiff(path, pixels=False)["shape"])


def read_raw(scene: Scene) -> np.ndarray:
    """The scene's pixels as stored (C×H×W in the file's own type), read again from its sources: the
    exact values where float32 `bands` would round them (float64, 32- and 64-bit integers)."""
    if scene.path is None:
        raise SceneError("scene: it was not read from a file, so it has no stored values")
    path = Path(scene.path)
    if path.is_dir():
        _, bands, _ = _landsat_files(path)
        parts = [read_tiff(f)["data"] for _, f in bands]
        raw = np.concatenate(parts) if len(parts) > 1 else parts[0]
    else:
        raw = read_tiff(path)["data"]
    if raw.shape != scene.shape:
        raise SceneError(f"{path}: it changed since it was read ({raw.shape} instead of {scene.shape})")
    return raw



def _make_scene(raw: np.ndarray, names, geo_tags, nodata_value, path: Path, sources, metadata,
                lazy_float: bool = False, nodata: np.ndarray | None = None) -> Scene:
    if lazy_float and raw.dtype.kind in "ui" and raw.dtype.str in EXACT_IN_FLOAT32:
        nodata = _compact(equals_nodata(raw, nodata_value)) if nodata is None else nodata
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
    nodata |= equals_nodata(raw, nodata_value)
    bands[nodata] = np.nan
    return bands, _compact(nodata)


def _compact(nodata: np.ndarray) -> np.ndarray:
    """No nodata at all: a read-only view of one False instead (a full scene's bool array is 336 MB)."""
    return nodata if nodata.any() else np.broadcast_to(np.False_, nodata.shape)




def _landsat_files(folder: Path) -> tuple[dict[str, Path], list[tuple[str, Path]], tuple[Path, ...]]:
    """(every band file by band name, the bands of the scene in order, every file the scene is read from)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise SceneError(f"{folder}: cannot list the folder ({os_problem(err)})") from None
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
    ordered = sorted(files.items(), key=lambda kv: band_file_order(kv[0]))
    shapes = {name: read_tiff(f, pixels=False)["shape"][1:] for name, f in ordered}
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
        raw = read_tiff(f)
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

