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
