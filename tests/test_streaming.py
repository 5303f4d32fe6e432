"""Streamed results (issue 13): the file-to-file fill writes mean and variance row band by row band into
tiled GeoTIFFs, equal to the in-memory `fill`; tiles with nothing to fill run no network and change nothing."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_convnp import cli, inpaint, masks
from napari_convnp.inpaint import Cancelled, fill
from napari_convnp.scene import read_scene

from .conftest import SAMPLES, write_geotiff


def itaipu(h: int, w: int) -> np.ndarray:
    """The Itaipu sample (3 bands), mirrored to cover h×w: real texture on a multi-tile scene."""
    sample = read_scene(SAMPLES / "itaipu_landsat8_B234_768.tif").bands
    wide = np.concatenate([sample, sample[:, :, ::-1]], axis=2)
    tall = np.concatenate([wide, wide[:, ::-1]], axis=1)
    return np.ascontiguousarray(tall[:, :h, :w])


def close_enough(a: np.ndarray, b: np.ndarray, gaps: np.ndarray, scale: float) -> bool:
    """The tolerance of tests/test_inpaint.py::test_tiled_matches_whole."""
    diff = np.abs(a - b)[:, gaps]
    return diff.mean() < 0.002 * scale and np.percentile(diff, 99.9) < 0.05 * scale


@pytest.fixture(scope="module")
def scene_700x900(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    bands = itaipu(700, 900)
    gaps = masks.simulate_slc_off(bands.shape[1:], seed=0, pixel_size=30, crop_offset=(0, 0))
    given = np.where(gaps, 0, bands).astype(np.float32)
    path = write_geotiff(folder / "scene.tif", given)
    mask = write_geotiff(folder / "mask.tif", gaps[None].astype(np.uint8))
    return folder, path, mask, given, gaps


@pytest.fixture(scope="module")
def streamed(scene_700x900):
    """`napari-convnp fill` of the scene in 256-px tiles (several rows of tiles), with --variance."""
    folder, path, mask, given, gaps = scene_700x900
    out, var = folder / "o.tif", folder / "v.tif"
    assert cli.main(["fill", str(path), "--out", str(out), "--variance", str(var), "--mask", str(mask),
                     "--tile", "256", "--device", "cpu"]) == 0
    return out, var


@pytest.mark.slow
def test_streamed_cli_output_equals_the_in_memory_fill(scene_700x900, streamed):
    folder, path, mask, given, gaps = scene_700x900
    memory = fill(given, gaps, device="cpu", tile=256)
    mean, variance = read_scene(streamed[0]).bands, read_scene(streamed[1]).bands
    scale = given.std(axis=(1, 2)).mean()
    assert close_enough(mean, memory.mean, gaps, scale)
    assert np.abs(np.sqrt(variance) - np.sqrt(memory.variance))[:, gaps].mean() < 0.002 * scale
    assert np.array_equal(mean[:, ~gaps], given[:, ~gaps]) and (variance[:, ~gaps] == 0).all()
    # the same arithmetic in the same order: in fact identical
    assert np.array_equal(mean, memory.mean) and np.array_equal(variance, memory.variance)


@pytest.mark.slow
def test_streamed_outputs_are_tiled_geotiffs_band_by_band(scene_700x900, streamed):
    folder, path, mask, given, gaps = scene_700x900
    for name in ("o.tif", "v.tif", "o_filled_mask.tif"):
        with tifffile.TiffFile(folder / name) as tif:
            page = tif.pages[0]
            assert page.is_tiled and page.tilewidth == 256 and page.compression == 8, name
            assert tif.series[0].shape == (3, 700, 900) and page.planarconfig == 2, name
            assert {33550, 33922, 34735, 42112, 42113} - ({42113} if "mask" in name else set()) <= set(page.tags.keys())
    sidecar = tifffile.imread(folder / "o_filled_mask.tif").astype(bool)
    assert np.array_equal(sidecar, np.broadcast_to(gaps, (3, 700, 900)))
    assert not list(folder.glob(".*"))  # no temporary or scratch file left


@pytest.mark.slow
def test_fill_hands_over_final_rows_top_to_bottom(scene_700x900):
    _, _, _, given, gaps = scene_700x900
    bands, gaps = given[:, :256, :300], gaps[:256, :300]
    seen = []
    result = fill(bands, gaps, device="cpu", tile=128,
                  on_rows=lambda r0, mean, var: seen.append((r0, mean.copy(), var.copy())))
    assert result.mean is None and result.variance is None
    starts = [r0 for r0, _, _ in seen]
    assert starts[0] == 0 and len(starts) > 2
    assert all(r0 + m.shape[1] == nxt for (r0, m, _), nxt in zip(seen, starts[1:] + [256]))
    whole = fill(bands, gaps, device="cpu", tile=128)
    assert np.array_equal(np.concatenate([m for _, m, _ in seen], axis=1), whole.mean)
    assert np.array_equal(np.concatenate([v for _, _, v in seen], axis=1), whole.variance)


@pytest.mark.slow
def test_cancelled_mid_stream_leaves_nothing(scene_700x900, tmp_path):
    _, path, mask, _, _ = scene_700x900
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 8  # after the first row of tiles has gone to the files

    with pytest.raises(Cancelled):
        cli.fill_file(path, tmp_path / "o.tif", mask=mask, variance=tmp_path / "v.tif", tile=256, device="cpu",
                      cancelled=cancelled)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_integer_output_streams_rounded_fills_and_exact_known_pixels(tmp_path):
    bands = np.round(itaipu(600, 300)[:1] * 10000).astype(np.uint16)
    gaps = masks.simulate_slc_off(bands.shape[1:], seed=1, pixel_size=30, crop_offset=(0, 0))
    given = np.where(gaps, 0, bands).astype(np.uint16)
    given[:, :, :20] = 0  # off-scene: nodata that stays nodata
    path = write_geotiff(tmp_path / "u16.tif", given, nodata=0)
    mask = write_geotiff(tmp_path / "m.tif", (gaps & (np.arange(300) >= 20))[None].astype(np.uint8))
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "o.tif"), "--mask", str(mask), "--tile", "128",
                     "--dtype", "source", "--device", "cpu"]) == 0
    out = tifffile.imread(tmp_path / "o.tif")
    filled = gaps & (np.arange(300) >= 20)
    assert out.dtype == np.uint16 and np.array_equal(out[~filled], given[0][~filled])
    memory = fill(given.astype(np.float32), filled, nodata=given == 0, device="cpu", tile=128).mean[0]
    expected = np.clip(np.rint(memory[filled]), 1, 65535)  # never onto the nodata value 0
    assert np.array_equal(out[filled], expected.astype(np.uint16))


@pytest.mark.slow
def test_tiles_with_nothing_to_fill_are_skipped_and_change_nothing(monkeypatch):
    bands = itaipu(520, 520)
    cloud = np.zeros(bands.shape[1:], bool)  # a painted cloud in one corner
    yy, xx = np.mgrid[:520, :520]
    cloud[(yy - 90) ** 2 + (xx - 110) ** 2 < 60 ** 2] = True
    model = inpaint._cached_model("cpu")
    monkeypatch.setattr(inpaint, "CALIBRATE_ON_SCENE", False)  # its one call on tasks cut from the scene aside
    calls = []

    class Counting:
        multiple = model.multiple
        config = model.config

        def __call__(self, *args):
            calls.append(1)
            return model(*args)

    skipped = fill(bands, cloud, device="cpu", tile=128, model=Counting())
    n_skipping = len(calls)
    real = inpaint.predict_rows
    monkeypatch.setattr(inpaint, "predict_rows", lambda *a: real(*a[:-1], None))  # gaps=None: no skipping
    calls.clear()
    every = fill(bands, cloud, device="cpu", tile=128, model=Counting())
    n_tiles = len(inpaint.tile_grid(520, 128, model.multiple)) ** 2
    assert len(calls) == n_tiles and n_skipping < n_tiles // 2
    assert np.array_equal(skipped.mean, every.mean) and np.array_equal(skipped.variance, every.variance)


@pytest.mark.slow
def test_integer_scene_read_lazily_fills_as_the_float_copy_does(tmp_path):
    """The file-to-file fill keeps a 16-bit scene as stored and converts windows as it goes (FloatView): the
    same pixels, NaN where nodata, and the same filled file as a fill of the scene's float32 copy."""
    from napari_convnp.scene import FloatView

    bands = np.clip(itaipu(300, 420) * 10000, 1, 60000).astype(np.uint16)
    gaps = masks.simulate_slc_off(bands.shape[1:], seed=1, pixel_size=30, crop_offset=(0, 0))
    bands[:, gaps] = 0
    bands[:, :, :40] = 0  # an off-scene border: nodata that stays nodata
    path = write_geotiff(tmp_path / "scene.tif", bands, nodata=0)
    mask = write_geotiff(tmp_path / "mask.tif", gaps[None].astype(np.uint8))

    lazy, eager = read_scene(path, lazy_float=True), read_scene(path)
    assert isinstance(lazy.bands, FloatView) and isinstance(eager.bands, np.ndarray)
    np.testing.assert_array_equal(np.asarray(lazy.bands), eager.bands)  # NaN where nodata, in both
    np.testing.assert_array_equal(lazy.bands[1, 50:90, 30:70], eager.bands[1, 50:90, 30:70])
    np.testing.assert_array_equal(np.stack(list(lazy.bands)), eager.bands)

    out = tmp_path / "filled.tif"
    assert cli.main(["fill", str(path), "--out", str(out), "--mask", str(mask), "--tile", "256",
                     "--device", "cpu", "--dtype", "float32"]) == 0
    memory = fill(eager.bands, gaps, nodata=eager.nodata, device="cpu", tile=256)
    np.testing.assert_array_equal(read_scene(out).bands, memory.mean)
    assert np.isnan(memory.mean[eager.nodata & ~gaps]).all()  # the border stays nodata


@pytest.mark.parametrize("layout", [
    dict(planarconfig="separate", compression="zlib", rowsperstrip=7),
    dict(planarconfig="contig", compression="lzw", rowsperstrip=16),
    dict(planarconfig="separate", tile=(32, 48), compression="zlib"),
    dict(planarconfig="contig", tile=(16, 32)),
    dict(planarconfig="separate"),  # uncompressed, tifffile's own strips
])
@pytest.mark.parametrize("dtype", [np.uint16, np.int8])
def test_windowed_reading_gives_the_stored_pixels(tmp_path, layout, dtype):
    """A file-to-file fill decodes the input strip by strip or tile by tile (TiffPixels): every window, band and
    row the fill asks for equals the stored array, in strips or tiles, interleaved or by band, edge blocks too."""
    from napari_convnp.scene import TiffPixels

    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    stored = rng.integers(max(info.min, -100), min(info.max, 5000), (4, 101, 133)).astype(dtype)
    stored[:, :3] = 7  # a nodata top edge
    path = tmp_path / "scene.tif"
    data = stored if layout["planarconfig"] == "separate" else np.moveaxis(stored, 0, -1)
    tifffile.imwrite(path, data, photometric="minisblack", metadata=None,
                     extratags=[(42113, "s", 0, "7", True)], **layout)
    scene = read_scene(path, lazy_float=True)
    pixels = scene.bands.raw
    assert isinstance(pixels, TiffPixels)
    windows = [(slice(None), slice(10, 60), slice(20, 90)), 2, (1, slice(50, 101)), (slice(1, 3), 100),
               (..., slice(120, 133)), (3, slice(0, 17), 5), (slice(None), slice(64, 128), slice(0, 133)),
               (0, slice(5, 9), slice(None, None, 4)), (2, slice(40, 41), -1), (1, slice(30, 90), slice(31, 33))]
    for index in windows:
        np.testing.assert_array_equal(pixels[index], stored[index], err_msg=str(index))
    np.testing.assert_array_equal(np.asarray(pixels), stored)
    pixels = TiffPixels.open(path)  # nothing decoded yet
    pixels.whole_rows = False  # as napari reads a streamed result: only the tiles under the columns asked for
    for index in windows + windows[::-1]:  # each window after a wider and after a narrower one
        np.testing.assert_array_equal(pixels[index], stored[index], err_msg=f"narrow {index}")
    pixels[1, 30:90, 31:33]
    assert pixels._cache[0][4:] == (31, 33)  # what was decoded: those columns, not whole rows
    expected = np.where(stored == 7, np.nan, stored.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(scene.bands), expected)
    np.testing.assert_array_equal(scene.nodata, stored == 7)


def test_windowed_reading_checks_every_block_before_any_fill(tmp_path):
    """A damaged block deep in the file is found while the scene is read (one line naming the file), not
    after minutes of filling; a file that changes under the fill is an error, never a mixed picture."""
    from napari_convnp.scene import SceneError

    stored = np.arange(6 * 200 * 90, dtype=np.uint16).reshape(6, 200, 90)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, stored, photometric="minisblack", planarconfig="separate", compression="zlib",
                     rowsperstrip=16, metadata=None)
    scene = read_scene(path, lazy_float=True)
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[-3]  # a strip of the last band
    damaged = tmp_path / "damaged.tif"
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 12] = b"\xff" * 12
    damaged.write_bytes(bytes(raw))
    with pytest.raises(SceneError, match="damaged.tif: the TIFF is damaged or truncated"):
        read_scene(damaged, lazy_float=True)

    tifffile.imwrite(path, stored[:, ::-1], photometric="minisblack", planarconfig="separate", compression="zlib",
                     rowsperstrip=16, metadata=None)
    with pytest.raises(SceneError, match="scene.tif: the file changed while it was being filled"):
        scene.bands[0, 150:]
