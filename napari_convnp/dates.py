"""The acquisition date of a scene, from what Landsat files carry: a product ID in the file or folder name,
the MTL beside the band files, GDAL metadata, or a leading ISO date in the file name.

In that order: a product ID names its acquisition date exactly; the MTL and metadata are the product's
own words; a date at the start of a file name is a user's convention. numpy-free; knows nothing of napari.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

from .errors import OptionError, SceneError
from .landsat import PRODUCT_ID, SCENE_ID, mtl_files
from .scene import Scene
from .tiffread import metadata_root

# A date at the start of a file name: 2008-04-19_….tif, 20080419_….tif
LEADING_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
MTL_DATE = re.compile(r"^\s*(?:DATE_ACQUIRED|ACQUISITION_DATE)\s*=\s*\"?([^\"\s]+)", re.MULTILINE)
METADATA_KEYS = ("ACQUISITION_DATE", "ACQ_DATE", "DATE_ACQUIRED")
ISO_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})(?:[T ].*)?$")


def scene_date(path: str | Path, scene: Scene | None = None) -> datetime.date | None:
    """The acquisition date of the scene read from `path` (a file or a Landsat product folder), or None where
    nothing says it; SceneError, naming the file, where a source gives a date that does not exist."""
    path = Path(path)
    found = _date_in_name(path)
    if found is None:
        found = _date_in_mtl(path)
    if found is None and scene is not None:
        found = _date_in_metadata(scene.gdal_metadata, path)
    if found is None:
        match = LEADING_DATE.match(path.name)
        found = _calendar(*match.groups(), path, "its name") if match else None
    return found


def parse_date(text: str | datetime.date, what: str) -> datetime.date:
    """A date given by the user (2008-04-19, 20080419, or a date object); OptionError naming `what` if not one."""
    if isinstance(text, datetime.datetime):
        return text.date()
    if isinstance(text, datetime.date):
        return text
    match = ISO_DATE.match(str(text).strip())
    try:
        if match:
            return datetime.date(*map(int, match.groups()))
    except ValueError:
        pass
    raise OptionError(f"{what}: '{text}' is not a date (write it as YYYY-MM-DD)")


def _date_in_name(path: Path) -> datetime.date | None:
    match = PRODUCT_ID.search(path.name)
    if match:
        return _calendar(*match.groups(), path, "its product ID")
    match = SCENE_ID.search(path.name)
    if match:
        year, day = int(match.group(1)), int(match.group(2))
        if not 1 <= day <= (366 if _leap(year) else 365):
            raise SceneError(f"{path}: its scene ID says day {day} of {year}, which does not exist")
        return datetime.date(year, 1, 1) + datetime.timedelta(days=day - 1)
    return None


def _date_in_mtl(path: Path) -> datetime.date | None:
    """From the product's *_MTL.txt: inside a product folder, or beside a file whose name it begins."""
    for mtl in mtl_files(path):
        try:
            match = MTL_DATE.search(mtl.read_text(errors="replace"))
        except OSError as err:
            raise SceneError(f"{mtl}: cannot read it ({err.strerror or err})") from None
        if match:
            return _text_date(match.group(1), mtl, "its DATE_ACQUIRED")
    return None


def _date_in_metadata(metadata: str | None, path: Path) -> datetime.date | None:
    root = metadata_root(metadata)
    if root is None:
        return None
    items = {(item.get("name") or "").upper(): (item.text or "").strip()
             for item in root.iter("Item") if item.get("sample") is None}
    for key in METADATA_KEYS:
        if items.get(key):
            return _text_date(items[key], path, f"its metadata item {key}")
    return None


def _text_date(text: str, path: Path, where: str) -> datetime.date:
    match = ISO_DATE.match(text)
    if not match:
        raise SceneError(f"{path}: {where} '{text}' is not a date")
    return _calendar(*match.groups(), path, where)


def _calendar(year: str, month: str, day: str, path: Path, where: str) -> datetime.date:
    try:
        return datetime.date(int(year), int(month), int(day))
    except ValueError:
        raise SceneError(f"{path}: {where} says {year}-{month}-{day}, which is not a date") from None


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
