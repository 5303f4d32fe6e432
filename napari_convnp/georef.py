"""Georeferencing: where a scene's pixels lie on the map, parsed from its GeoTIFF tags in one place.

The raw GeoTIFF tag numbers and GeoKey codes live here only; the reader copies the tags, the writer writes them
back, and everything else asks a `Grid`: the pixel size, the offset between two grids, the CRS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODEL_PIXEL_SCALE = 33550
MODEL_TIEPOINT = 33922
MODEL_TRANSFORMATION = 34264
GEO_KEY_DIRECTORY = 34735
GEO_DOUBLE_PARAMS = 34736
GEO_ASCII_PARAMS = 34737
# GeoTIFF tags that carry georeferencing, copied verbatim from input to output.
GEO_TAGS = {
    MODEL_PIXEL_SCALE: "ModelPixelScale",
    MODEL_TIEPOINT: "ModelTiepoint",
    MODEL_TRANSFORMATION: "ModelTransformation",
    GEO_KEY_DIRECTORY: "GeoKeyDirectory",
    GEO_DOUBLE_PARAMS: "GeoDoubleParams",
    GEO_ASCII_PARAMS: "GeoAsciiParams",
}

# GeoKeys (GeoTIFF 1.1) this package reads.
MODEL_TYPE, RASTER_TYPE, GEOGRAPHIC_TYPE, PROJECTED_TYPE, LINEAR_UNITS = 1024, 1025, 2048, 3072, 3076
MODEL_GEOGRAPHIC = 2  # MODEL_TYPE: latitude and longitude
PIXEL_IS_POINT = 2  # RASTER_TYPE: the tie point is a pixel's centre, not its corner
# GeoKeys that only name or describe a CRS, not define it (RasterType places the grid, not the CRS).
DESCRIPTIVE_KEYS = {RASTER_TYPE, 1026, 2049, 3073}
LINEAR_UNIT_NAMES = {9001: "m", 9002: "foot", 9003: "foot"}


def tag_numbers(value) -> list[float] | None:
    """A numeric tag value as floats, or None for text and values that are not numbers."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        return [float(v) for v in np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()]
    except (TypeError, ValueError):
        return None


def geokeys(tags: dict) -> dict:
    """The GeoKeyDirectory as {key: value}, values read from the double and text tags where they live there;
    {} where there is none or it cannot be parsed."""
    directory = tag_numbers(tags.get(GEO_KEY_DIRECTORY))
    if not directory or len(directory) < 4:
        return {}
    try:
        directory = [int(v) for v in directory]
    except (OverflowError, ValueError):  # inf, NaN
        return {}
    doubles, text = tag_numbers(tags.get(GEO_DOUBLE_PARAMS)) or [], str(tags.get(GEO_ASCII_PARAMS) or "")
    keys = {}
    for i in range(4, 4 + 4 * directory[3], 4):
        if i + 4 > len(directory):
            break
        key, location, count, value = directory[i:i + 4]
        if location == 0:
            keys[key] = value
        elif location == GEO_DOUBLE_PARAMS:
            keys[key] = tuple(round(v, 9) for v in doubles[value:value + count])
        elif location == GEO_ASCII_PARAMS:
            keys[key] = text[value:value + count].rstrip("|")
    return keys


@dataclass(frozen=True)
class Grid:
    """Where a scene's pixels lie: the map position of every pixel corner and the coordinate system.

    transform: GDAL's order (x0, dx, row rotation, y0, column rotation, dy): map x = x0 + column·dx +
    row·(row rotation), y = y0 + column·(column rotation) + row·dy, at pixel corners (a PixelIsPoint tie
    point already moved by half a pixel). crs: an identity to compare, ("EPSG", code) where it has one, else
    its defining GeoKeys; None when the file names none. units: the map unit ("m", "foot", "degree"), or None.
    """

    transform: tuple[float, float, float, float, float, float]
    crs: tuple | None = None
    units: str | None = "m"

    @classmethod
    def from_tags(cls, tags: dict) -> Grid | None:
        """The grid the GeoTIFF tags describe (a ModelTransformation first, else tie point and pixel scale), or
        None where they do not place one (no tags, too few or non-finite values, a zero pixel size)."""
        matrix = tag_numbers(tags.get(MODEL_TRANSFORMATION))
        tie, scale = tag_numbers(tags.get(MODEL_TIEPOINT)), tag_numbers(tags.get(MODEL_PIXEL_SCALE))
        if tags.get(MODEL_TRANSFORMATION) is not None:
            if matrix is None or len(matrix) < 8:
                return None
            x0, dx, rx, y0, ry, dy = matrix[3], matrix[0], matrix[1], matrix[7], matrix[4], matrix[5]
        elif tie is not None and scale is not None and len(tie) >= 6 and len(scale) >= 2:
            dx, dy, rx, ry = scale[0], -scale[1], 0.0, 0.0
            x0, y0 = tie[3] - tie[0] * dx, tie[4] - tie[1] * dy
        else:
            return None
        if not all(math.isfinite(v) for v in (x0, dx, rx, y0, ry, dy)) or dx * dy - rx * ry == 0:
            return None
        keys = geokeys(tags)
        if keys.get(RASTER_TYPE) == PIXEL_IS_POINT:
            x0, y0 = x0 - (dx + rx) / 2, y0 - (ry + dy) / 2
        return cls((x0, dx, rx, y0, ry, dy), _crs(keys), _units(keys))

    @property
    def rotated(self) -> bool:
        """Rotated or sheared: rows and columns do not run along the map's axes."""
        return self.transform[2] != 0 or self.transform[4] != 0

    @property
    def pixel_size(self) -> float | None:
        """Ground size of a pixel in map units (metres for UTM), when it is a sensible one."""
        size = abs(self.transform[1])
        return size if 1e-9 < size < 1e9 else None  # no denormal or absurd sizes

    @property
    def crs_text(self) -> str:
        if self.crs is None:
            return "none given"
        return f"EPSG:{self.crs[1]}" if self.crs[0] == "EPSG" else "a user-defined one"

    def offset(self, other: Grid) -> tuple[float, float]:
        """Where `other`'s first pixel corner falls on this (north-up) grid, in (rows, columns)."""
        x0, dx, _, y0, _, dy = self.transform
        return (other.transform[3] - y0) / dy + 0.0, (other.transform[0] - x0) / dx + 0.0  # + 0.0: no -0.0


def _crs(keys: dict) -> tuple | None:
    """An identity of the coordinate system: its EPSG code where it has one, else its defining keys."""
    if not keys:
        return None
    code = keys.get(PROJECTED_TYPE) if keys.get(MODEL_TYPE, 1) == 1 else keys.get(GEOGRAPHIC_TYPE)
    if isinstance(code, int) and 0 < code < 32767:
        return ("EPSG", code)
    return tuple(sorted((k, v) for k, v in keys.items() if k not in DESCRIPTIVE_KEYS))


def _units(keys: dict) -> str | None:
    if keys.get(MODEL_TYPE) == MODEL_GEOGRAPHIC:
        return "degree"
    return LINEAR_UNIT_NAMES.get(keys.get(LINEAR_UNITS, 9001))

