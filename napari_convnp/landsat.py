"""What the package knows of Landsat: band numbers in names and file names, the sensor family and how OLI bands
map onto TM/ETM+ ones, what each band sees and the RGB composites made of them, the files of a product, product
IDs, and what a product says of its files (whether an untagged 0 is its fill, which files are its own gap masks).

One place for it, used by the scene reader (product folders, fill), the reference alignment (band matching), the
dates of a stack and the napari plugin (composites). Works on names alone: no pixels, no TIFF, no napari.

USGS Level-1 and Level-2 bands store fill as 0 and say so only in their documentation, not in a nodata tag;
Landsat 7 SLC-off products ship a gap mask per band (`gap_mask/*_GM_B<n>.TIF`, 0 = gap or off the scene).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .scene import Scene

# --- names ---------------------------------------------------------------------------------------

# A Landsat band as products spell it: B1, B10, B6_VCID_1 (ETM+'s two thermal gains).
_BAND = r"B(?P<number>\d{1,2})(?:_VCID_(?P<vcid>\d))?"
# A band number in a band name: B1, SR_B4, ST_B10, 'ETM+ B3 red', b5_swir1, B6_VCID_1 (not 'band 1').
BAND_NUMBER = re.compile(rf"(?<![A-Za-z])(?:(?P<product>SR|ST)_)?{_BAND}(?!\d)", re.IGNORECASE)
# A band file of a product folder: LE07_..._B1.TIF, ..._B6_VCID_1.TIF, ..._SR_B4.TIF (group 1: 'B6_VCID_1').
BAND_FILE = re.compile(rf"_({_BAND})\.tiff?$", re.IGNORECASE)
# Band numbers spelled in a file name: '…_B234.tif' (one digit each), '…_B1-7.tif' (a range).
SPELLED_BANDS = re.compile(r"_B(\d+)(?=_|$)", re.IGNORECASE)
SPELLED_BAND_RANGE = re.compile(r"_B(\d{1,2})-(\d{1,2})(?=_|$)", re.IGNORECASE)
# The other files of a product that describe the scene (metadata, angles, quality bands).
PRODUCT_FILE = re.compile(r"_(MTL|ANG|MD5)\.(txt|xml|json)$|_(BQA|QA_PIXEL|QA_RADSAT|SR_QA_AEROSOL|"
                          r"ST_QA|ST_[A-Z]+|GM_B\d+)\.tiff?$", re.IGNORECASE)
# A product's file name: LC08_…, LE07_…, LT05_…, LO08_…, LM05_… (Collection 1 and 2), LE70440342003123EDC00.
PRODUCT_NAME = re.compile(r"^L[CEOTM]0?\d", re.IGNORECASE)
PANCHROMATIC = {"B8"}  # 15 m band of Landsat 7/8: twice the size of the others
# The sensor in a file or band name: a product name (LC08_…, LE07_…, LT05_…, LC8…, LE7…, L7ETM+, L8_…,
# landsat-8) or the instrument (OLI; ETM+, TM).
OLI_IN_NAME = re.compile(r"(?i)(?<![a-z0-9])(?:l[co]0?[89]|landsat[-_ ]?[89]|l[s]?[89])(?![0-9])"
                         r"|(?<![a-z0-9])l[co][89]\d{6}|\boli\b")
TM_IN_NAME = re.compile(r"(?i)(?<![a-z0-9])(?:l[etm]0?[4-7]|landsat[-_ ]?[4-7]|l[st]?[4-7])(?![0-9])"
                        r"|(?<![a-z0-9])l[etm][4-7]\d{6}|etm\+?|(?<![a-z])tm(?![a-z])")

# --- bands ---------------------------------------------------------------------------------------

# OLI (Landsat 8/9) bands as the TM/ETM+ band that sees the same light: B2-B7 are TM/ETM+ B1-B5, B7.
OLI_TO_TM = {2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 7}
# Landsat band numbers of each colour, per sensor: TM (Landsat 4/5) and ETM+ (Landsat 7) share one
# numbering, OLI (Landsat 8/9) adds a coastal band 1 and so shifts the others by one.
BAND_ROLES = {
    "tm": {1: "blue", 2: "green", 3: "red", 4: "nir", 5: "swir1", 7: "swir2"},
    "oli": {1: "coastal", 2: "blue", 3: "green", 4: "red", 5: "nir", 6: "swir1", 7: "swir2"},
}
COMPOSITE_ROLES = (
    ("natural colour", ("red", "green", "blue")),
    ("false colour", ("nir", "red", "green")),
    ("SWIR", ("swir1", "nir", "red")),
)
AS_STORED = "as stored (bands 1-2-3)"
_COLOUR_WORDS = {"blue": "blue", "green": "green", "red": "red", "nir": "nir", "swir1": "swir1", "swir 1": "swir1",
                 "swir2": "swir2", "swir 2": "swir2", "coastal": "coastal"}


def band_number(name: str) -> tuple[int, str | None] | None:
    """(number, VCID or None) of the Landsat band a band name names ('SR_B4' → (4, None)), or None."""
    found = BAND_NUMBER.search(name)
    return (int(found["number"]), found["vcid"]) if found else None


def band_file_order(band: str) -> tuple[int, str]:
    """Sort key of a product's band files by their band ('B2' < 'B6_VCID_1' < 'B6_VCID_2' < 'B10')."""
    return band_number(band)[0], band


def sensor_family(scene: Scene) -> str:
    """'oli' (Landsat 8/9 numbering) or 'tm' (Landsat 4/5 TM and 7 ETM+ numbering): the one sensor rule of the
    package (band matching of references, composites in napari).

    The file or folder name decides first, then the band names: a product name (LC08, LE07, L8, landsat-8 …)
    or the instrument (OLI; ETM+, TM). Else a band numbered 10 or 11 (thermal, OLI/TIRS only) or SR_B6
    (Collection 2 surface reflectance: ETM+/TM band 6 is the thermal ST_B6), or 10 bands or more, mean OLI.
    Unknown counts as TM/ETM+: this tool fills Landsat 7 scenes.
    """
    for text in (scene.path.name if scene.path is not None else "", *scene.band_names):
        if OLI_IN_NAME.search(text):
            return "oli"
        if TM_IN_NAME.search(text):
            return "tm"
    for name in scene.band_names:
        for found in BAND_NUMBER.finditer(name):
            number, product = int(found["number"]), (found["product"] or "").upper()
            if number in (10, 11) or (number == 6 and product == "SR"):
                return "oli"
    # 10 or more bands: only OLI/TIRS products have that many (an ETM+ stack has 9 with B6 twice)
    return "oli" if len(scene.band_names) >= 10 else "tm"


def band_numbers(scene: Scene) -> list[int | None]:
    """The Landsat band number of every band: from band names ('B4', 'SR_B4', 'ETM+ B4 NIR'), else from
    a file name that spells them ('…_B234.tif', '…_B1-7.tif'), else the sensor's usual stack order when
    there are at least 4 bands; None where unknown (3 unnamed bands are often a composite already)."""
    count = len(scene.band_names)
    found = [band_number(name) for name in scene.band_names]
    if all(found):
        return [number for number, _ in found]
    stem = scene.path.stem if scene.path else ""
    spelled = SPELLED_BANDS.search(stem)
    if spelled and len(spelled.group(1)) == count:
        return [int(d) for d in spelled.group(1)]
    spelled = SPELLED_BAND_RANGE.search(stem)
    if spelled and int(spelled.group(2)) - int(spelled.group(1)) + 1 == count:
        return list(range(int(spelled.group(1)), int(spelled.group(2)) + 1))
    if count < 4:
        return [None] * count
    if count == 6:  # the six reflective bands, without thermal (and without OLI's coastal band)
        return [2, 3, 4, 5, 6, 7] if sensor_family(scene) == "oli" else [1, 2, 3, 4, 5, 7]
    return list(range(1, count + 1))


def tm_band_keys(scene: Scene) -> list[tuple]:
    """A key per band that two scenes share where their bands see the same light: ('tm', TM/ETM+ band number,
    VCID) where the band's name has a Landsat number (OLI numbers translated), else ('name', its name)."""
    family = sensor_family(scene)
    keys = []
    for name in scene.band_names:
        found = band_number(name)
        if found is None:
            keys.append(("name", name.strip().lower()))
            continue
        number, vcid = found
        if family == "oli":
            keys.append(("tm", OLI_TO_TM[number], vcid) if number in OLI_TO_TM else ("oli", number, vcid))
        else:
            keys.append(("tm", number, vcid))
    return keys


def band_roles(scene: Scene) -> list[str | None]:
    """What each band sees ('red', 'nir', …) by the sensor's numbering or colour words in band names."""
    roles = BAND_ROLES[sensor_family(scene)]
    out = [roles.get(n) if n is not None else None for n in band_numbers(scene)]
    for i, name in enumerate(scene.band_names):
        if out[i] is None:
            words = re.sub(r"[^a-z0-9 ]", " ", name.lower())
            out[i] = next((role for word, role in _COLOUR_WORDS.items() if re.search(rf"\b{word}\b", words)), None)
    return out


def composites(scene: Scene) -> dict[str, tuple[int, int, int]]:
    """The RGB composites this scene has bands for: label → band indices (red, green, blue channel).

    Labels name the sensor's band numbers, so a Landsat 8 scene offers 'natural colour (4-3-2)' where a
    Landsat 7 scene offers 'natural colour (3-2-1)'. The first entry is the default."""
    roles, numbers = band_roles(scene), band_numbers(scene)
    out = {}
    for name, needed in COMPOSITE_ROLES:
        if all(role in roles for role in needed):
            idx = tuple(roles.index(role) for role in needed)
            spelled = "-".join(str(numbers[i]) if numbers[i] is not None else roles[i] for i in idx)
            out[f"{name} ({spelled})"] = idx
    if len(scene.band_names) >= 3:
        out[AS_STORED] = (0, 1, 2)
    return out


# --- products ------------------------------------------------------------------------------------

# Collection 1/2 product IDs: LE07_L1TP_092084_20110809_20161206_01_T1 (the first date is the acquisition)
PRODUCT_ID = re.compile(r"(?<![A-Za-z0-9])L[COTEM]0\d_[A-Z0-9]{4}_\d{6}_(\d{4})(\d{2})(\d{2})(?!\d)", re.IGNORECASE)
# Older scene IDs: LE70350322008118EDC00 = sensor, path 035, row 032, year 2008, day of year 118, station, version
SCENE_ID = re.compile(r"(?<![A-Za-z0-9])L[COTEM]\d\d{6}(\d{4})(\d{3})[A-Z]{3}\d{2}(?![A-Za-z0-9])", re.IGNORECASE)
# Files of masks or quality flags, not of the surface: their 0 is a value (a gap, a clear pixel), never fill.
MASK_NAME = re.compile(r"(?i)_GM_B\d|mask|qa_pixel|(?<![a-z])bqa(?![a-z])|qa_radsat|sr_qa|st_qa")
# A product's own gap masks: *_GM_B1.TIF (per band, in gap_mask/ or beside the bands), or a file named gapmask
GAP_MASK_NAME = re.compile(r"(?i)_GM_(B\d{1,2}(?:_VCID_\d)?)\.tiff?$|gap_?mask[^/]*\.tiff?$")


def product_id(path: str | Path) -> str | None:
    """The Landsat product or scene ID in the name of `path` or of its folder, upper case, or None."""
    path = Path(path)
    for name in (path.name, path.parent.name):
        found = PRODUCT_ID.search(name) or SCENE_ID.search(name)
        if found:
            return found.group(0).upper()
    return None


def mtl_files(path: str | Path) -> list[Path]:
    """The product's *_MTL.txt: inside a product folder, or beside a file whose name it begins."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        mtls = sorted(folder.glob("*_MTL.txt")) + sorted(folder.glob("*_MTL.TXT"))
    except OSError:
        return []
    if not path.is_dir():
        mtls = [m for m in mtls if path.name.upper().startswith(m.name[:-len("_MTL.txt")].upper())]
    return mtls


def gap_mask_files(path: str | Path) -> list[Path]:
    """The product's own gap masks for the scene read from `path`: for a product folder, its `gap_mask/*_GM_B<n>.TIF`
    (or those beside the bands); for a file, the gap masks in its folder (and its gap_mask/) that carry its
    product ID. None for a file without a product ID: whose masks they are cannot be told."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    found = []
    for place in (folder / "gap_mask", folder):
        try:
            found += sorted(f for f in place.iterdir() if GAP_MASK_NAME.search(f.name) and f.is_file())
        except OSError:
            continue
    if path.is_dir():
        return found
    own = product_id(path.name)
    return [f for f in found if own is not None and product_id(f.name) == own and f != path]


def zero_is_fill(path: str | Path, dtype, band_names=()) -> bool:
    """Whether an untagged 0 in the integer band file `path` is the product's fill: the file is a Landsat
    product's band (a product ID in its name or its folder's, an MTL beside it, or its gap masks) of unsigned
    integers (USGS DN and reflectance bands; a signed band such as NDVI×10⁴ has 0 as data) and neither it nor any
    of its bands is a mask or quality layer (CFmask's 0 is clear land). Never in float files or other files, where
    0 may be dark water."""
    path = Path(path)
    if np.dtype(dtype).kind != "u" or MASK_NAME.search(path.name) or any(MASK_NAME.search(n) for n in band_names):
        return False
    return bool(product_id(path) or mtl_files(path) or gap_mask_files(path))
