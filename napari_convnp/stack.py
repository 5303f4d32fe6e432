"""A stack of dates of one place: the scenes on one grid, their acquisition dates and, per date, the pixels
that may never serve as context (`unusable`) and the clouds among them (`cloudy`).

Inputs are what `fill-many` takes (files, Landsat product folders, globs). A product folder's `*_QA_PIXEL.TIF`
or `*_BQA.TIF`, or a stacked GeoTIFF's quality band (found by its name, such as `fmask`, or given as
`qa_band`), is read as quality and never as a spectral band. Dates on another grid are put on the first
input's grid by georeferencing and their bands matched by Landsat band number, as a `--reference` is.
numpy only; knows nothing of torch or napari.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import qa as qa_bands
from .dates import parse_date, scene_date
from .errors import OptionError, SceneError
from .reference import align_reference, grid_offset, match_bands
from .scene import TIFF_SUFFIXES, Scene, expand_inputs, read_scene


@dataclass(frozen=True)
class Stack:
    """Dates of one place, sorted by date, every scene on the grid of the first input.

    scenes: Scene per date (C×H×W, NaN where unknown, band order of the first input's scene).
    dates: datetime.date per date, ascending and distinct.
    unusable: H×W bool per date: never context (fill, cloud, dilated cloud, cirrus, shadow, snow, nodata,
    each grown by `dilate`).
    cloudy: H×W bool per date, the part of `unusable` that is cloud, cirrus or shadow: a target's clouds
    are filled only when the user asks (the default fills nodata and stripes).
    paths: the file or folder each date was read from.
    """

    scenes: list[Scene]
    dates: list[datetime.date]
    unusable: list[np.ndarray]
    cloudy: list[np.ndarray]
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.scenes)


def read_stack(inputs, *, dates=None, qa: str | None = None, qa_band: int | str | None = None,
               dilate: int = 0) -> Stack:
    """Read every date of a place as one `Stack`.

    dates: one date per input scene (in the order `inputs` expand to; a list, or text separated by commas),
    overriding what the files say. qa: the quality band's kind ('qa_pixel', 'bqa', 'fmask', 'mask': nonzero
    = cloud) where its name does not say it. qa_band: a stacked GeoTIFF's quality band, by index (0-based;
    -1 is the last) or name. With qa or qa_band given, every date must have its quality band.
    dilate: grow the unusable and cloudy pixels by this many pixels.
    """
    if qa is not None:
        qa_bands.check_kind(qa)
    qa_bands.check_dilate(dilate)
    paths = expand_inputs(inputs)
    if not paths:
        raise SceneError(f"{_text(inputs)}: no scene found (no GeoTIFF or Landsat product folder)")
    given = _given_dates(dates, len(paths))
    required = qa is not None or qa_band is not None
    read = []
    for i, path in enumerate(paths):
        scene, quality = _read_date(path, qa, qa_band, required)
        read.append((given[i] if given else scene_date(path, scene), path, scene, quality))
    return _assemble(read, dilate)


def date_order(inputs, *, dates=None, qa: str | None = None,
               qa_band: int | str | None = None) -> tuple[list[tuple[datetime.date, Path]], Path]:
    """([(date, path)] of every date of a stack, sorted by date and checked as `read_stack` checks them (each
    dated, each date once), the first input, whose grid every date is put on), with each input read window by
    window and let go: `read_date` then reads one date at a time, so a stack is never in memory whole. Arguments
    as `read_stack`'s."""
    if qa is not None:
        qa_bands.check_kind(qa)
    paths = expand_inputs(inputs)
    if not paths:
        raise SceneError(f"{_text(inputs)}: no scene found (no GeoTIFF or Landsat product folder)")
    given = _given_dates(dates, len(paths))
    required = qa is not None or qa_band is not None
    read = []
    for i, path in enumerate(paths):
        scene = _read_date(path, qa, qa_band, required, lazy=True)[0]
        read.append((given[i] if given else scene_date(path, scene), path, None, None))
    return [(date, path) for date, path, _, _ in _in_date_order(read)], paths[0]


def read_date(path: Path, first: Path, *, qa: str | None = None, qa_band: int | str | None = None,
              dilate: int = 0) -> tuple[Scene, np.ndarray, np.ndarray]:
    """One date of a stack as `read_stack` reads it, on the grid and in the band order of `first` (the stack's
    first input): (its Scene, unusable, cloudy); its pixels decoded window by window as they are used where the
    file allows (`read_scene(lazy_float=True)`)."""
    required = qa is not None or qa_band is not None
    scene, quality = _read_date(path, qa, qa_band, required, lazy=True)
    grid = scene if Path(first) == Path(path) else _read_date(Path(first), qa, qa_band, required, lazy=True)[0]
    return _placed(grid, scene, quality, path, qa_bands.check_dilate(dilate))


def stack_of(scenes: list[Scene], *, dates=None, dilate: int = 0) -> Stack:
    """Scenes already read (with no quality band: their nodata is what is unusable) as one `Stack`, dated by
    `dates` (one per scene) or by their files' names and metadata as `read_stack` dates them."""
    qa_bands.check_dilate(dilate)
    scenes = list(scenes)
    if not scenes:
        raise SceneError("the stack is empty: give at least one scene")
    wrong = next((s for s in scenes if not isinstance(s, Scene)), None)
    if wrong is not None:
        raise OptionError(f"scenes must be Scenes (napari_convnp.read_scene), not {type(wrong).__name__}")
    given = _given_dates(dates, len(scenes))
    read = [(given[i] if given else scene_date(s.path, s) if s.path else None, s.path or Path(f"scene {i + 1}"), s,
             None) for i, s in enumerate(scenes)]
    return _assemble(read, dilate)


def _assemble(read: list, dilate: int) -> Stack:
    """(date, path, scene, quality or None) per date as a Stack: dated, sorted, each date once, on the first's
    grid."""
    first = read[0][2]
    read = _in_date_order(read)
    scenes, unusable, cloudy = [], [], []
    for _, path, scene, quality in read:
        scene, *masks = _placed(first, scene, quality, path, dilate)
        scenes.append(scene)
        unusable.append(masks[0])
        cloudy.append(masks[1])
    return Stack(scenes, [item[0] for item in read], unusable, cloudy, [item[1] for item in read])


def _in_date_order(read: list) -> list:
    """(date, path, …) per date sorted by date; a SceneError where one has no date or two share one."""
    undated = [str(path) for date, path, _, _ in read if date is None]
    if undated:
        raise SceneError(f"no acquisition date for {', '.join(undated)}: name the files by their Landsat product ID "
                         "or date (2008-04-19_….tif), keep the *_MTL.txt beside them, or give the dates")
    read = sorted(read, key=lambda item: item[0])
    for (date, a, _, _), (later, b, _, _) in zip(read, read[1:]):
        if date == later:
            raise SceneError(f"{a} and {b}: both dated {date.isoformat()}; a stack holds one scene per date")
    return read


def _placed(first: Scene, scene: Scene, quality, path: Path, dilate: int):
    """(scene, unusable, cloudy) of one date on the first input's grid."""
    scene, quality = _on_grid(first, scene, quality, path)
    return (scene, *qa_bands.date_masks(scene.nodata, quality, dilate))


def _text(inputs) -> str:
    return str(inputs) if isinstance(inputs, (str, os.PathLike)) else " ".join(map(str, inputs)) or "inputs"


def _given_dates(dates, count: int) -> list[datetime.date] | None:
    if dates is None:
        return None
    items = dates.split(",") if isinstance(dates, str) else list(dates)
    if len(items) != count:
        raise OptionError(f"dates: {len(items)} given for {count} scenes; give one date per scene, in input order")
    return [parse_date(d.strip() if isinstance(d, str) else d, "dates") for d in items]


def _read_date(path: Path, kind: str | None, qa_band, required: bool, lazy: bool = False):
    """(the scene without its quality band, its decoded (unusable, cloudy) or None); lazy: its pixels decoded
    window by window where the file allows (`read_scene(lazy_float=True)`)."""
    scene = read_scene(path, lazy_float=lazy)
    if path.is_dir():
        found = [(f, qa_bands.kind_from_name(f.name)) for f in sorted(path.iterdir())
                 if f.suffix.lower() in TIFF_SUFFIXES and qa_bands.kind_from_name(f.name) in ("qa_pixel", "bqa")]
        if not found:
            return scene, _missing(path, required)
        file, named = found[0]
        values = read_scene(file).bands[0]
        if values.shape != scene.shape[1:]:
            raise SceneError(f"{file}: the quality band is {values.shape[1]}×{values.shape[0]} pixels but the "
                             f"bands are {scene.shape[2]}×{scene.shape[1]}")
        return scene, qa_bands.decode(values, _kind(named, kind, file), str(file))
    index = _quality_index(scene, qa_band, path)
    if index is None:
        return scene, _missing(path, required)
    name = scene.band_names[index]
    what = f"{path} band {index + 1} ({name})"
    quality = qa_bands.decode(scene.bands[index], _kind(qa_bands.kind_from_name(name), kind, what), what)
    # every quality band leaves the spectral bands, the one read and any other band named as one
    keep = [b for b, band in enumerate(scene.band_names) if b != index and not qa_bands.kind_from_name(band)]
    if not keep:
        raise SceneError(f"{path}: it holds only quality bands; there is no spectral band to fill")
    spectral = replace(scene, bands=np.asarray(scene.bands)[keep], band_names=[scene.band_names[b] for b in keep],
                       nodata=np.asarray(scene.nodata)[keep])
    return spectral, quality


def _missing(path: Path, required: bool) -> None:
    if required:
        raise SceneError(f"{path}: no quality band found (a *_QA_PIXEL.TIF or *_BQA.TIF in a product folder, or a "
                         "band named qa_pixel, bqa or fmask); name it with qa_band")
    return None


def _kind(named: str | None, asked: str | None, what) -> str:
    """The layout of a quality band: what its name says, else what the user asked; refused where they differ."""
    if named and asked and named != asked:
        raise OptionError(f"qa: '{asked}' was asked but {what} is named as a {named} band")
    if named or asked:
        return named or asked
    raise OptionError(f"qa: the kind of {what} is not in its name; give it (one of {', '.join(qa_bands.QA_KINDS)})")


def _quality_index(scene: Scene, qa_band, path: Path) -> int | None:
    """The index of the file's quality band: `qa_band` (an index or a band name), else a band named as one."""
    count = scene.shape[0]
    if qa_band is None:
        named = [b for b, name in enumerate(scene.band_names) if qa_bands.kind_from_name(name)]
        if len(named) > 1:
            raise SceneError(f"{path}: bands {', '.join(scene.band_names[b] for b in named)} are all named as quality "
                             "bands; name the one to use with qa_band")
        return named[0] if named else None
    if isinstance(qa_band, (int, np.integer)) and not isinstance(qa_band, bool):
        if not -count <= qa_band < count:
            raise SceneError(f"{path}: qa_band {qa_band} is beyond its {count} bands")
        return int(qa_band) % count
    wanted = str(qa_band).strip().casefold()
    for b, name in enumerate(scene.band_names):
        if name.strip().casefold() == wanted:
            return b
    raise SceneError(f"{path}: no band named '{qa_band}' (its bands: {', '.join(scene.band_names)})")


def _on_grid(first: Scene, scene: Scene, quality, path: Path):
    """The scene (and its quality masks) on the first input's grid and in its band order."""
    if scene is first:
        return scene, quality
    try:
        rows, cols = grid_offset(first, scene)
        pairs = match_bands(first, scene)
    except ValueError as err:
        raise SceneError(f"{path}: {err}") from None
    if (rows, cols) == (0, 0) and scene.shape == first.shape and pairs == list(range(first.shape[0])):
        return scene, quality
    bands = align_reference(first, scene)
    moved = replace(scene, bands=bands, band_names=list(first.band_names), nodata=np.isnan(bands),
                    geo_tags=first.geo_tags)
    if quality is not None:
        quality = (_paste(quality[0], rows, cols, first.shape[1:], True),
                   _paste(quality[1], rows, cols, first.shape[1:], False))
    return moved, quality


def _paste(mask: np.ndarray, rows: int, cols: int, shape: tuple[int, int], outside: bool) -> np.ndarray:
    """A mask whose pixel (0, 0) lies at (rows, cols) of a grid of `shape`, cut to it; `outside` elsewhere."""
    out = np.full(shape, outside, bool)
    h, w = mask.shape
    r0, r1, c0, c1 = max(0, rows), min(shape[0], rows + h), max(0, cols), min(shape[1], cols + w)
    if r0 < r1 and c0 < c1:
        out[r0:r1, c0:c1] = mask[r0 - rows:r1 - rows, c0 - cols:c1 - cols]
    return out
