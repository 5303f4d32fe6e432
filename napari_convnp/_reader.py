"""The npe2 reader: GeoTIFFs and Landsat product folders as layers, and napari's preference for it."""
from __future__ import annotations

import re
from pathlib import Path

from ._napari import scene_layers
from .scene import BAND_FILE, TIFF_SUFFIXES, read_scene

PLUGIN = "napari-convnp"
READER_PATTERNS = ("*.tif", "*.tiff", "*.TIF", "*.TIFF")  # as in napari.yaml

GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 42112, 42113)  # georeferencing, GDAL metadata, GDAL nodata
_LANDSAT_NAME = re.compile(r"(?i)^L[CEOTM]0?\d")


def understands(path) -> bool:
    """Whether this plugin should claim a TIFF: it is a GeoTIFF (georeferencing or GDAL tags), is named
    like a Landsat product, or cannot be parsed at all (then the reader's error names the problem). A
    plain TIFF (a micrograph, a photo) is left to other readers."""
    p = Path(path)
    if _LANDSAT_NAME.match(p.name) or BAND_FILE.search(p.name):
        return True
    try:
        import tifffile

        with tifffile.TiffFile(p) as tif:
            tags = tif.pages[0].tags
            return any(code in tags for code in GEOTIFF_TAGS)
    except Exception:  # noqa: BLE001 - unreadable: let read_scene say why, in one line
        return True


def get_reader(path):
    """Reader for GeoTIFF files and Landsat product folders; None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        try:
            if not any(BAND_FILE.search(f.name) for f in p.iterdir()):
                return None
        except OSError:
            return None
    elif p.suffix.lower() not in TIFF_SUFFIXES or not understands(p):
        return None
    return read_layers


def read_layers(path) -> list[tuple]:
    if isinstance(path, list):
        path = path[0]
    return scene_layers(read_scene(path))  # a SceneError names the file; napari shows it as a notification


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
