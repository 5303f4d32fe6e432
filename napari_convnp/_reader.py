"""The npe2 reader: GeoTIFFs and Landsat product folders as layers, mask and quality files as Labels, a folder or
a set of dates as one stack layer with a date axis, and napari's preference for it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._napari import SCENE_KEY, fit_placement, georeference, scene_layers, stack_layers
from .georef import GEO_TAGS
from .landsat import BAND_FILE, PRODUCT_NAME
from .maskfile import is_mask_file, read_mask, rule_for_name
from .scene import read_scene
from .stack import read_stack
from .tiffread import GDAL_METADATA, GDAL_NODATA, TIFF_SUFFIXES

PLUGIN = "napari-convnp"
READER_PATTERNS = ("*.tif", "*.tiff", "*.TIF", "*.TIFF")  # as in napari.yaml

GEOTIFF_TAGS = (*GEO_TAGS, GDAL_METADATA, GDAL_NODATA)  # georeferencing, GDAL metadata, GDAL nodata


def understands(path) -> bool:
    """Whether this plugin should claim a TIFF: it is a GeoTIFF (georeferencing or GDAL tags), is named
    like a Landsat product, or cannot be parsed at all (then the reader's error names the problem). A
    plain TIFF (a micrograph, a photo) is left to other readers."""
    p = Path(path)
    if PRODUCT_NAME.match(p.name) or BAND_FILE.search(p.name) or is_mask_file(p):
        return True
    try:
        import tifffile

        with tifffile.TiffFile(p) as tif:
            tags = tif.pages[0].tags
            return any(code in tags for code in GEOTIFF_TAGS)
    except Exception:  # noqa: BLE001 - unreadable: let read_scene say why, in one line
        return True


def get_reader(path):
    """Reader for GeoTIFF files and Landsat product folders; a folder of GeoTIFFs, or several files or product
    folders opened together (napari's open with stack=True), as a stack of dates; None for anything else."""
    if isinstance(path, list):
        if len(path) > 1:
            return read_stack_layers if all(map(_scene_input, path)) else None
        path = path[0]
    if _scene_input(path):
        return read_layers
    return read_stack_layers if _folder_of_dates(path) else None


def _scene_input(path) -> bool:
    """A Landsat product folder, or a TIFF this plugin understands; never a FIFO or a device (opening one would
    wait forever)."""
    p = Path(path)
    if p.is_dir():
        return any(BAND_FILE.search(f.name) for f in _listing(p))
    if p.exists() and not p.is_file():
        return False
    return p.suffix.lower() in TIFF_SUFFIXES and understands(p)


def _folder_of_dates(path) -> bool:
    """A folder of two or more GeoTIFFs (no product folder): the dates of a stack."""
    p = Path(path)
    files = [f for f in _listing(p) if f.suffix.lower() in TIFF_SUFFIXES and f.is_file()] if p.is_dir() else []
    return len(files) > 1 and all(map(understands, files))


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def read_layers(path) -> list[tuple]:
    if isinstance(path, list):
        path = path[0]
    if is_mask_file(path):
        return mask_layers(path)
    return scene_layers(read_scene(path))  # a SceneError names the file; napari shows it as a notification


def read_stack_layers(path) -> list[tuple]:
    """The dates of one place (a folder of GeoTIFFs, or several files or product folders) as one layer with a
    date axis and their masks (`stack_layers`); a date missing or twice, or a grid that does not align, is a
    one-line SceneError naming the file."""
    return stack_layers(read_stack(path))


def mask_layers(path) -> list[tuple]:
    """A mask or quality file as a Labels layer, 1 = fill, by the rule its name announces (a USGS gap mask's 0, a
    QA_PIXEL/BQA/Fmask band's clouds and shadows, else nonzero), placed on the map like a scene; the widget's
    Mask picker lists it."""
    mask, mask_scene = read_mask(path, **rule_for_name(Path(path).name))
    data = mask[0] if len(mask) == 1 else mask
    return [(data.astype(np.uint8), {"name": mask_scene.name, "metadata": {SCENE_KEY: mask_scene},
                                     **fit_placement(georeference(mask_scene), data.ndim)}, "labels")]


def preferred_reader_patterns() -> list[str]:
    """The file patterns napari currently opens with this plugin without asking."""
    from napari.settings import get_settings

    prefs = get_settings().plugins.extension2reader
    return [p for p in READER_PATTERNS if prefs.get(p) == PLUGIN]


def prefer_this_reader(on: bool = True) -> None:
    """Make this plugin napari's reader for .tif/.tiff files (drag and drop, File › Open) without the
    'choose a reader' dialog, or undo that. It is napari's own per-pattern preference (Preferences ›
    Plugins › File extension readers); TIFFs this plugin does not understand then fall back to the dialog."""
    from napari.settings import get_settings

    settings = get_settings().plugins
    prefs = dict(settings.extension2reader)
    for pattern in READER_PATTERNS:
        if on:
            prefs[pattern] = PLUGIN
        elif prefs.get(pattern) == PLUGIN:
            del prefs[pattern]
    settings.extension2reader = prefs
