"""The Python API as a careless or hostile caller uses it (issue 24): wrong types are named up front with the
package's own errors, nothing is lost, and what the outputs record is what was done."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tifffile

from napari_convnp import baselines, cli, fileio, masks
from napari_convnp._reader import get_reader
from napari_convnp.errors import FillError, MaskError, OptionError, SceneError
from napari_convnp.inpaint import fill
from napari_convnp.options import MAX_ADAPT_STEPS, FillOptions
from napari_convnp.scene import read_provenance, read_scene

from .conftest import EVALUATE_SETS, fake_evaluate_data, gap_mask, smooth, write_geotiff


def scene(tmp_path, name="s.tif", dtype=np.uint8, **kwargs):
    bands = smooth(2, 64, 96, dtype, offset=120.0, scale=100.0) if dtype == np.uint8 else smooth(2, 64, 96, dtype)
    return write_geotiff(tmp_path / name, bands, **kwargs)


def test_the_api_imports_from_the_package_without_loading_torch():
    code = ("import sys, napari_convnp; assert 'torch' not in sys.modules; "
            "from napari_convnp import fill, fill_file, read_scene, fill_many, FillOptions; "
            "assert 'torch' not in sys.modules; print(fill.__module__, fill_file.__module__, read_scene.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["napari_convnp.inpaint", "napari_convnp.fileio", "napari_convnp.scene"]


@pytest.mark.parametrize("argument, value, message", [
    ("progress", 3, "progress must be a function"),
    ("cancelled", "no", "cancelled must be a function"),
    ("on_rows", [1], "on_rows must be a function"),
    ("scene", "x", "scene must be the Scene"),
    ("model", "x", "model must be ConvNP weights"),
    ("reference", np.array([["a", "b"]]), "reference must be a file name, a Scene or an array of numbers"),
    ("reference", np.ones((1, 8, 8), np.complex64), "reference: complex pixels are not supported"),
    ("reference", 3, "reference must be a file name"),
])
def test_fill_names_a_wrongly_typed_argument_before_any_work(argument, value, message):
    bands, gaps = np.ones((1, 8, 8), np.float32), np.zeros((8, 8), bool)
    gaps[3] = True
    with pytest.raises(FillError, match=message):
        fill(bands, gaps, method="convnp" if argument == "model" else "idw", **{argument: value})


def test_fill_options_refuse_endless_and_pointless_adaptation():
    for steps in (-1, MAX_ADAPT_STEPS + 1, 2 ** 63, 10 ** 30, 1.5, True):
        with pytest.raises(OptionError, match="adaptation steps must be a whole number from 0"):
            FillOptions(adapt_steps=steps).validate()
    with pytest.raises(OptionError, match="adaptation fine-tunes the ConvNP"):
        FillOptions(method="idw", adapt_steps=3).validate()
    assert FillOptions(adapt_steps=3.0, device="cuda:1").validate().adapt_steps == 3


def test_adaptation_on_a_scene_too_small_to_adapt_is_refused_not_skipped():
    bands, gaps = smooth(1, 24, 24, np.float32), np.zeros((24, 24), bool)
    gaps[10] = True
    with pytest.raises(FillError, match="too small to adapt"):
        fill(bands, gaps, adapt_steps=5, device="cpu")


@pytest.mark.parametrize("arguments, message", [
    ({"input": None}, "input must be a file name"),
    ({"input": 3}, "input must be a file name"),
    ({"input": b"s.tif"}, "input must be a file name"),
    ({"out": ["o.tif"]}, "out must be a file name"),
    ({"variance": True}, "variance must be a file name"),
    ({"reference": 5}, "reference must be a file name or a list"),
    ({"reference": [None]}, "each reference must be a file name"),
    ({"progress": 1}, "progress must be a function"),
    ({"invert_mask": True}, "--invert-mask turns a mask round, but no mask was given"),
    ({"magic": 1}, "fill_file takes no option 'magic'"),
])
def test_fill_file_names_a_wrongly_typed_argument(tmp_path, arguments, message):
    kwargs = {"input": scene(tmp_path), "out": tmp_path / "o.tif", "method": "idw", **arguments}
    with pytest.raises(OptionError, match=message):
        fileio.fill_file(kwargs.pop("input"), kwargs.pop("out"), **kwargs)
    assert not (tmp_path / "o.tif").exists()


def test_fill_file_takes_one_reference_path_as_one_reference(tmp_path):
    with pytest.raises(SceneError, match=r"ref\.tif: no such file or folder \(reference\)"):
        fileio.fill_file(scene(tmp_path), tmp_path / "o.tif", reference=str(tmp_path / "ref.tif"), method="llhm")


def test_fill_many_checks_its_options_before_dask_starts(tmp_path):
    src = scene(tmp_path)
    for kwargs, message in (({"adapt_steps": -1}, "adaptation steps must be"), ({"magic": 2}, "no option 'magic'"),
                            ({"workers": "2"}, r"--workers must be 1 or more \(a whole number\), not '2'"),
                            ({"inputs": None}, "inputs must be a file, folder or glob"),
                            ({"inputs": [3]}, "each input must be a file name"),
                            ({"out_dir": None}, "out_dir must be a file name"),
                            ({"scheduler": 8786}, "scheduler must be a Dask scheduler's address")):
        with pytest.raises(OptionError, match=message):
            from napari_convnp.batch import fill_many

            fill_many(**{"inputs": [src], "out_dir": tmp_path / "out", **kwargs})
    assert not (tmp_path / "out").exists()


def test_read_scene_and_masks_name_arguments_of_the_wrong_type():
    for value in (None, 3, b"s.tif"):
        with pytest.raises(SceneError, match="read_scene's path must be a file name"):
            read_scene(value)
    with pytest.raises(MaskError, match="with pixels in it"):
        masks.detect_gaps(np.zeros((0, 0)), np.zeros((0, 0), bool))
    with pytest.raises(MaskError, match="pixel_size must be a number"):
        masks.detect_gaps(np.zeros((1, 8, 8)), np.zeros((1, 8, 8), bool), pixel_size="30")


def test_the_napari_reader_does_not_wait_on_a_named_pipe(tmp_path):
    fifo = tmp_path / "f.tif"
    os.mkfifo(fifo)
    answer = []
    worker = threading.Thread(target=lambda: answer.append(get_reader(str(fifo))), daemon=True)
    worker.start()
    worker.join(10)
    assert answer == [None]


def test_filled_values_of_an_integer_scene_stay_in_its_range(tmp_path, monkeypatch):
    """A fill that overshoots (here a method made to) never writes values a uint8 scene cannot hold, in a float
    output too; the summary and the provenance say so."""
    monkeypatch.setitem(baselines.METHODS, "harmonic", lambda given, context: np.where(context, given, 300.0))
    src = write_geotiff(tmp_path / "s.tif", smooth(1, 64, 96, np.uint8, offset=120.0, scale=100.0))
    for dtype in ("auto", "float64", "source"):
        out = tmp_path / f"o_{dtype}.tif"
        summary = fileio.fill_file(src, out, mask=gap_mask(tmp_path / "m.tif"), method="harmonic", dtype=dtype)
        filled = tifffile.imread(out)[20:24]
        assert filled.max() == 255, dtype
        assert summary["clipped_pixels"] == 4 * 96
        assert read_provenance(out)["CLIPPED"] == "filled values clipped to the source's uint8 range [0, 255]"


def test_streamed_results_of_an_integer_scene_stay_in_its_range(tmp_path, monkeypatch):
    """The widget's streamed path (fileio.fill_to_files) clips as the file-to-file fill does."""
    monkeypatch.setitem(baselines.METHODS, "harmonic", lambda given, context: np.where(context, given, -40.0))
    scene_ = read_scene(write_geotiff(tmp_path / "s.tif", smooth(1, 64, 96, np.uint8, offset=120.0, scale=100.0)))
    gaps = np.zeros((64, 96), bool)
    gaps[20:24] = True
    _, mean_path, _ = fileio.fill_to_files(scene_.bands, gaps, tmp_path, like=scene_, name="t", method="harmonic")
    assert tifffile.imread(mean_path)[20:24].min() == 0


def test_a_fill_and_a_sidecar_from_different_runs_are_told_apart(tmp_path):
    src = scene(tmp_path)
    first = fileio.fill_file(src, tmp_path / "a.tif", mask=gap_mask(tmp_path / "m1.tif", rows=(20, 24)),
                             method="idw")
    fileio.fill_file(src, tmp_path / "b.tif", mask=gap_mask(tmp_path / "m2.tif", rows=(30, 33)), method="idw")
    assert read_provenance(first["out"])["MASK_SHA256"] == read_provenance(first["filled_mask"])["MASK_SHA256"]
    read_scene(first["out"])  # a pair from one run reads
    os.replace(tmp_path / "b_filled_mask.tif", tmp_path / "a_filled_mask.tif")  # as a race between two runs leaves it
    for path in (first["out"], first["filled_mask"]):
        with pytest.raises(SceneError, match="come from different runs"):
            read_scene(path)


def test_a_fill_without_its_mask_removes_an_earlier_runs_mask(tmp_path):
    src, out = scene(tmp_path), tmp_path / "o.tif"
    sidecar = fileio.fill_file(src, out, mask=gap_mask(tmp_path / "m.tif"), method="idw")["filled_mask"]
    assert os.path.exists(sidecar)
    fileio.fill_file(src, out, mask=gap_mask(tmp_path / "m2.tif", rows=(30, 33)), method="idw", filled_mask=False)
    assert not os.path.exists(sidecar)
    read_scene(out)


def test_a_foreign_file_at_the_sidecars_name_is_never_replaced(tmp_path):
    src, out = scene(tmp_path), tmp_path / "o.tif"
    foreign = write_geotiff(tmp_path / "o_filled_mask.tif", smooth(1))
    before = foreign.read_bytes()
    with pytest.raises(SceneError, match="not a filled-pixel mask written by napari-convnp"):
        fileio.fill_file(src, out, mask=gap_mask(tmp_path / "m.tif"), method="idw")
    assert foreign.read_bytes() == before and not out.exists()
    fileio.fill_file(src, out, mask=gap_mask(tmp_path / "m.tif"), method="idw", filled_mask=False)  # leaves it
    assert foreign.read_bytes() == before


def test_fill_many_into_its_input_folder_takes_no_earlier_output_for_a_scene(tmp_path):
    from napari_convnp.batch import fill_many

    src = scene(tmp_path)
    (tmp_path / "m").mkdir()  # the mask apart: not a scene of the folder
    mask = gap_mask(tmp_path / "m" / "m.tif")
    fileio.fill_file(src, tmp_path / "s_idw.tif", mask=mask, method="idw")  # an earlier run's outputs beside it
    report = fill_many(tmp_path, tmp_path, workers=1, method="idw")
    assert report["skipped"] == [str(src)] and not report["done"] and not report["failed"]


def test_evaluate_never_writes_its_scores_over_an_input(tmp_path, capsys):
    data = fake_evaluate_data(tmp_path / "data")
    weights = tmp_path / "w.pt"
    from napari_convnp.model import WEIGHTS

    weights.write_bytes(open(WEIGHTS, "rb").read())
    before = weights.read_bytes()
    code = cli.main(["evaluate", "--data", str(data), *EVALUATE_SETS, "--weights", str(weights), "--json",
                     str(weights)])
    assert code == 2 and weights.read_bytes() == before
    assert "refusing to overwrite the input file" in capsys.readouterr().err


def test_a_negative_infinite_blend_weight_is_refused_for_what_it_is(tmp_path, capsys):
    code = cli.main(["fill", str(scene(tmp_path)), "--out", str(tmp_path / "o.tif"), "--biharmonic-weight", "-inf"])
    assert code == 2
    assert "--biharmonic-weight: the biharmonic weight must be a number in [0, 1]" in capsys.readouterr().err

