import numpy as np
import pytest
from scipy import ndimage

from napari_convnp import masks
from napari_convnp.scene import read_scene


def test_simulated_full_scene_loses_about_22_percent():
    full = masks.simulate_slc_off((3000, 6167), crop_offset=(0, 0), seed=3)
    assert 0.20 < full.mean() < 0.24


def test_simulation_is_seeded_and_geometric():
    a = masks.simulate_slc_off((256, 256), seed=1)
    assert np.array_equal(a, masks.simulate_slc_off((256, 256), seed=1))
    assert not np.array_equal(a, masks.simulate_slc_off((256, 256), seed=2))
    centre = masks.simulate_slc_off((256, 256), crop_offset=(0, 6167 // 2 - 128), seed=1)
    edge = masks.simulate_slc_off((256, 256), crop_offset=(0, 0), seed=1)
    assert centre.mean() < 0.03 < 0.35 < edge.mean()  # gaps vanish at the centre, widen to the edges
    # stripes repeat every 32 lines at 30 m: a column's gap pattern shifted by 32 rows is the same
    column = edge[:, 10]
    assert np.mean(column[:-32] == column[32:]) > 0.95
    # and slant: the row of the first gap pixel drifts across the crop
    first = [np.argmax(edge[:, c]) for c in (0, 200)]
    assert first[0] != first[1]


def test_coarser_pixels_give_narrower_stripes():
    thirty = masks.simulate_slc_off((512, 512), crop_offset=(0, 0), pixel_size=30)
    ninety = masks.simulate_slc_off((512, 512), crop_offset=(0, 0), pixel_size=90)
    assert abs(thirty.mean() - ninety.mean()) < 0.08  # same loss fraction, different widths
    run_lengths = lambda m: np.diff(np.flatnonzero(np.diff(m[:, 5].astype(int)))).max()  # noqa: E731
    assert run_lengths(thirty) > run_lengths(ninety)


def test_detection_matches_official_usgs_gap_mask(data_dir):
    folder = data_dir / "slc_off"
    scene = read_scene(folder / "wagl__LE07_L1TP_092084_20110809_20161206_01_T1_RR600m_8band.tif")
    official = read_scene(folder / "wagl__LE07_L1TP_092084_20110809_20161206_01_T1_RR600m_gapmask.tif").bands == 0
    gaps = masks.detect_gaps(scene.bands, scene.nodata, pixel_size=scene.pixel_size, zero_is_ambiguous=True)
    inside = ~masks.detect_large_nodata(official, pixel_size=scene.pixel_size)
    truth = official & inside
    precision = (gaps & truth).sum() / gaps.sum()
    recall = (gaps & truth).sum() / truth.sum()
    assert precision > 0.98 and recall > 0.95


def test_detection_on_real_stripes(data_dir):
    scene = read_scene(data_dir / "slc_off/vpac_rsa__LE07_NBAR_095_082_20100116_B345.tif")
    gaps = masks.detect_gaps(scene.bands, scene.nodata, pixel_size=scene.pixel_size)
    assert gaps.sum() > 0.7 * scene.nodata.sum()  # most nodata are stripes
    assert not (gaps & ~scene.nodata).any()


def test_dark_pixels_and_borders_are_not_gaps():
    rng = np.random.default_rng(0)
    bands = rng.uniform(20, 200, (3, 200, 300)).astype(np.float32)
    nodata = np.zeros(bands.shape, bool)
    nodata[1, 50:70, 50:120] = True  # water stored as 0 in one band only
    nodata[:, :, :40] = True  # off-scene border
    stripe = masks.simulate_slc_off((200, 300), crop_offset=(0, 0), seed=0)
    nodata |= stripe
    gaps = masks.detect_gaps(bands, nodata, pixel_size=30, zero_is_ambiguous=True)
    assert not gaps[:, :, :30].any()
    # only the stripes crossing the water (and a pixel beside them: bands may be offset by one pixel)
    assert not (gaps[1] & ~ndimage.binary_dilation(stripe, np.ones((3, 3))))[50:70, 50:120].any()
    assert gaps[:, :, 60:].sum() > 0.8 * stripe[:, 60:].sum() * 3


def test_transplant_real_geometry():
    source = masks.simulate_slc_off((100, 400), crop_offset=(0, 0), pixel_size=60)
    out = masks.transplant_gaps((300, 300), source, seed=4, source_pixel_size=60, pixel_size=30)
    assert out.shape == (300, 300) and 0.1 < out.mean() < 0.5
    assert np.array_equal(out, masks.transplant_gaps((300, 300), source, seed=4, source_pixel_size=60,
                                                     pixel_size=30))
    with pytest.raises(masks.MaskError, match="no gaps"):
        masks.transplant_gaps((10, 10), np.zeros((5, 5), bool))


def test_validate_and_combine():
    shape = (2, 10, 12)
    stripe = np.zeros((10, 12), bool)
    stripe[3:5] = True
    painted = np.zeros((10, 12), bool)
    painted[:, :2] = True
    assert masks.validate_mask(stripe, shape).shape == shape
    combined = masks.union(stripe, painted)
    assert combined.sum() == stripe.sum() + painted.sum() - (stripe & painted).sum()
    assert masks.subtract(stripe, painted).sum() == stripe.sum() - (stripe & painted).sum()
    with pytest.raises(masks.MaskError, match="empty"):
        masks.validate_mask(np.zeros((10, 12)), shape)
    with pytest.raises(masks.MaskError, match="covers every pixel"):
        masks.validate_mask(np.ones((10, 12)), shape)
    with pytest.raises(masks.MaskError, match=r"shape \(9, 12\)"):
        masks.validate_mask(np.ones((9, 12)), shape)


def test_masks_round_trip_through_geotiff(tmp_path):
    from napari_convnp._napari import SCENE_KEY
    from napari_convnp._writer import write_labels
    from napari_convnp.cli import load_mask

    from .conftest import SAMPLES

    scene = read_scene(SAMPLES / "itaipu_landsat8_B234_768.tif")
    stripes = masks.simulate_slc_off(scene.shape[1:], seed=9)
    write_labels(str(tmp_path / "mask.tif"), stripes.astype(np.uint8), {"metadata": {SCENE_KEY: scene}})
    back = load_mask(tmp_path / "mask.tif", scene)
    assert back.shape == scene.shape and np.array_equal(back[0], stripes)
    assert read_scene(tmp_path / "mask.tif").geo_tags == scene.geo_tags
    with pytest.raises(masks.MaskError, match="the mask is 10×10 pixels"):
        from .conftest import write_geotiff

        load_mask(write_geotiff(tmp_path / "small.tif", np.ones((1, 10, 10), np.uint8)), scene)


def test_a_float_mask_file_fills_where_nonzero_and_finite(tmp_path):
    from napari_convnp.fileio import load_mask

    from .conftest import write_geotiff

    values = np.array([[[0, 1, -2, np.nan, np.inf, 0.5]]], np.float32)
    scene = read_scene(write_geotiff(tmp_path / "s.tif", np.ones((2, 1, 6), np.float32)))
    mask = load_mask(write_geotiff(tmp_path / "m.tif", values), scene)
    # NaN and inf read as nodata: not filled
    assert mask.shape == (2, 1, 6) and mask[:, 0].tolist() == [[False, True, True, False, False, True]] * 2


def test_detect_gaps_with_a_2d_nodata_mask_is_one_band():
    """An H×W nodata mask is one band (it used to be taken row by row: 1-D closings, half the gaps)."""
    stripes = masks.simulate_slc_off((200, 300), crop_offset=(0, 0), seed=5)
    bands = np.where(stripes, np.nan, 1.0).astype(np.float32)
    flat = masks.detect_gaps(bands, stripes, pixel_size=30)
    stacked = masks.detect_gaps(bands[None], stripes[None], pixel_size=30)
    assert flat.shape == (200, 300) and np.array_equal(flat, stacked[0])
    assert flat.sum() > 0.95 * stripes.sum()
    assert np.array_equal(masks.detect_large_nodata(stripes, pixel_size=30),
                          masks.detect_large_nodata(stripes[None], pixel_size=30)[0])


@pytest.mark.parametrize("pixel_size", [5e-324, 0.0, -30.0, float("inf"), float("nan"), 1e300])
def test_absurd_pixel_sizes_mean_unknown(pixel_size):
    """A denormal, zero, negative or infinite ModelPixelScale (read from a file) is taken as unknown (30 m)
    instead of overflowing the gap width."""
    stripes = masks.simulate_slc_off((100, 200), crop_offset=(0, 0), seed=1)
    assert masks.pixel_metres(pixel_size) == masks.DEFAULT_PIXEL_M
    assert np.array_equal(masks.detect_gaps(None, stripes[None], pixel_size=pixel_size),
                          masks.detect_gaps(None, stripes[None], pixel_size=None))


def test_a_per_band_mask_layer_saves_with_the_scene_georeferencing(tmp_path):
    """A C×H×W Labels layer (detected gaps per band) saves as a uint8 GeoTIFF with the scene's tags and band
    names, and reads back as the same mask."""
    from napari_convnp._napari import SCENE_KEY
    from napari_convnp._writer import write_labels
    from napari_convnp.fileio import load_mask

    from .conftest import SAMPLES

    scene = read_scene(SAMPLES / "itaipu_landsat8_B234_768.tif")
    gaps = np.stack([masks.simulate_slc_off(scene.shape[1:], seed=s) for s in range(scene.shape[0])])
    write_labels(str(tmp_path / "gaps.tif"), gaps.astype(np.uint8) * 3, {"metadata": {SCENE_KEY: scene}})
    back = read_scene(tmp_path / "gaps.tif")
    assert back.source_dtype == "uint8" and back.geo_tags == scene.geo_tags and back.band_names == scene.band_names
    assert np.array_equal(load_mask(tmp_path / "gaps.tif", scene), gaps)


def test_detect_scene_gaps_names_what_it_takes():
    with pytest.raises(masks.MaskError, match="detect_scene_gaps takes a scene"):
        masks.detect_scene_gaps(np.zeros((2, 8, 8)))


def in_stripe(nodata: np.ndarray, width: int) -> np.ndarray:
    """Missing pixels with a known pixel (or the image's edge) within `width` + 1 rows above and below in their
    column: inside a scan-line stripe of at most that height, counted row by row (independent of masks.py)."""
    h = nodata.shape[-2]
    up, down = np.zeros(nodata.shape, int), np.zeros(nodata.shape, int)
    for r in range(h):
        up[..., r, :] = np.where(nodata[..., r, :], (up[..., r - 1, :] if r else 0) + 1, 0)
        k = h - 1 - r
        down[..., k, :] = np.where(nodata[..., k, :], (down[..., k + 1, :] if k < h - 1 else 0) + 1, 0)
    return nodata & (up + down - 1 <= width + 1)


def cloud_beside_stripes(seed=0):
    """SLC-off stripes (30 m, at a scene edge: 14 px wide) and cloud-like nodata with ragged edges (smoothed
    noise above its 85th percentile: blobs from a few pixels to ~100 px across)."""
    stripes = masks.simulate_slc_off((400, 500), crop_offset=(0, 0), seed=seed)
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(400, 500)), 8)
    return stripes, field > np.quantile(field, 0.85)


@pytest.mark.parametrize("seed", [0, 1])
def test_fill_edges_beside_a_large_nodata_area_follow_the_stripes(seed):
    """Issue 25.9: the square closing stepped into a large nodata area in blocks of ~20 px; every filled pixel
    beside the area left unfilled must lie across a stripe (known pixels above and below within its height)."""
    stripes, cloud = cloud_beside_stripes(seed)
    nodata = stripes | cloud
    width = masks._widest_gap_px(30)
    gaps = masks.detect_gaps(None, nodata, pixel_size=30)
    large = nodata & ~gaps
    beside = gaps & ndimage.binary_dilation(large, np.ones((3, 3)))
    assert beside.any() and large.any()
    assert not (beside & ~in_stripe(nodata, width)).any()
    # the stripes away from the large areas (and from the top and bottom rows, mirrored at the edge) are all found
    size = width + 2
    away = stripes & ~ndimage.binary_dilation(large, np.ones((size, size)))
    assert gaps[size:-size][away[size:-size]].all()


def test_menindee_fill_edges_follow_the_stripes(data_dir):
    """The Menindee scene of 2010-02-01 (62 % nodata: clouds masked, partial coverage) of issue 25.9."""
    scene = read_scene(data_dir / "slc_off/vpac_rsa__LE07_NBAR_095_082_20100201_B345.tif")
    gaps = masks.detect_scene_gaps(scene)
    large = scene.nodata & ~gaps
    beside = gaps & ndimage.binary_dilation(large, np.ones((1, 3, 3)))
    assert beside.any() and not (beside & ~in_stripe(scene.nodata, masks._widest_gap_px(scene.pixel_size))).any()


def test_a_usgs_products_own_gap_masks_say_which_zeros_are_gaps(tmp_path):
    """Issue 25.1: the product's gap_mask/*_GM_B<n>.TIF were ignored. A strip of dark water stored as 0 in every
    band looks like a stripe to the detector; the product's gap masks say it is data."""
    from .test_scene import striped_bands, usgs_folder

    bands, stripes = striped_bands()
    water = np.zeros_like(stripes)
    water[70:74, 10:120] = True
    water &= ~stripes
    bands[:, water] = 0
    guessed = masks.detect_scene_gaps(read_scene(usgs_folder(tmp_path / "without", bands)))
    assert guessed[:, water].mean() > 0.5  # without the product's masks: taken for a stripe
    scene = read_scene(usgs_folder(tmp_path / "with", bands, gap_masks=[~stripes] * len(bands)))
    gaps = masks.detect_scene_gaps(scene)
    assert not gaps[:, water].any() and gaps.sum() >= guessed[:, ~water].sum()
    assert not (gaps & ~stripes).any()


def test_real_usgs_gap_masks_are_read_from_a_product_folder(data_dir, tmp_path):
    """The wagl SLC-off scene as USGS delivers it (one untagged band file per band and gap_mask/*_GM_B<n>.TIF), and
    as the 8-band file with its gap mask file beside it (named by the same product ID)."""
    import tifffile

    from .test_scene import usgs_folder

    folder = data_dir / "slc_off"
    bands = np.moveaxis(tifffile.imread(folder / "wagl__LE07_L1TP_092084_20110809_20161206_01_T1_RR600m_8band.tif"),
                        -1, 0)
    official = np.moveaxis(tifffile.imread(
        folder / "wagl__LE07_L1TP_092084_20110809_20161206_01_T1_RR600m_gapmask.tif"), -1, 0)
    product = read_scene(usgs_folder(tmp_path / "LE07_product", bands, gap_masks=official))
    assert product.nodata_value == 0 and np.array_equal(product.nodata, bands == 0)
    # the product's gaps: its missing pixels that its gap masks mark, but for the off-scene border
    for scene in (product, read_scene(folder / "wagl__LE07_L1TP_092084_20110809_20161206_01_T1_RR600m_8band.tif")):
        large = masks.detect_large_nodata(official == 0, pixel_size=scene.pixel_size)  # 30 m here, 600 m there
        truth = scene.nodata & (official == 0) & ~large
        assert np.array_equal(masks.detect_scene_gaps(scene), truth)
        # the detector alone misses some
        guessed = masks.detect_gaps(scene.bands, scene.nodata, pixel_size=scene.pixel_size, zero_is_ambiguous=True)
        assert (guessed & truth).sum() < truth.sum()


def test_the_plugin_reader_opens_mask_files_as_labels(tmp_path, data_dir):
    """Issue 25.2: the reader refused a mask file or made it an Image layer, which the widget's Mask picker does not
    list. A USGS gap mask opens as Labels of its gaps (its 0), a QA_PIXEL band as its clouds, any *mask* file as its
    nonzero pixels; each placed on the map like its scene."""
    from napari_convnp._reader import get_reader

    from .conftest import write_geotiff

    gap_mask = data_dir / "slc_off/wagl__LE07_L1TP_092084_20110809_20161206_01_T1_RR600m_gapmask.tif"
    (data, meta, kind), = get_reader(str(gap_mask))(str(gap_mask))
    official = read_scene(gap_mask)
    assert kind == "labels" and data.dtype == np.uint8 and np.array_equal(data, official.bands == 0)
    assert meta["scale"][-1] == pytest.approx(official.pixel_size)  # on the map, in metres
    flags = np.zeros((1, 40, 50), np.uint16)
    flags[0, 5:9] = 1 << 3  # cloud
    flags[0, 20:22] = 1 << 6  # clear
    qa_band = write_geotiff(tmp_path / "LC08_L2SP_218074_20190114_20200829_02_T1_QA_PIXEL.TIF", flags)
    (data, _, kind), = get_reader(str(qa_band))(str(qa_band))
    assert kind == "labels" and data.shape == (40, 50) and np.flatnonzero(data.any(1)).tolist() == [5, 6, 7, 8]
    import tifffile

    plain = tmp_path / "clouds_mask.tif"
    tifffile.imwrite(plain, (flags[0] > 0).astype(np.uint8))  # no georeferencing, no GDAL tags
    (data, _, kind), = get_reader(str(plain))(str(plain))
    assert kind == "labels" and data.sum() == (flags[0] > 0).sum()
    scene = write_geotiff(tmp_path / "scene.tif", np.full((2, 40, 50), 7, np.uint16))
    assert [kind for *_, kind in get_reader(str(scene))(str(scene))] == ["image"]  # scenes stay images
