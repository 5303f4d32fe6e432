"""fill-many on a local Dask cluster of 2 workers: every scene written, a corrupt one reported, restartable."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from napari_convnp import cli
from napari_convnp.batch import expand_inputs, fill_many
from napari_convnp.scene import SceneError, read_scene

from .conftest import write_geotiff


@pytest.fixture
def scenes(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    y, x = np.mgrid[0:64, 0:96] / 15.0
    for i in range(3):
        bands = np.stack([np.sin(x + i), np.cos(y - i)]) * 50 + 100
        bands[:, 20:24] = 0  # a gap stored as 0 (declared nodata)
        write_geotiff(folder / f"scene{i}.tif", bands.astype(np.uint8), nodata=0)
    (folder / "corrupt.tif").write_bytes(b"II*\x00 not really a tiff")
    return folder


@pytest.mark.slow
def test_fill_many_local_cluster(scenes, tmp_path):
    out = tmp_path / "out"
    report = fill_many([str(scenes)], out, workers=2, method="idw", variance=False)
    assert sorted(os.path.basename(d["out"]) for d in report["done"]) == [f"scene{i}_idw.tif" for i in range(3)]
    assert len(report["failed"]) == 1 and "corrupt.tif" in report["failed"][0]["error"]
    filled = read_scene(out / "scene0_idw.tif")
    assert not filled.nodata.any() and filled.geo_tags
    assert not list(out.glob("*.partial"))  # nothing half-written left behind
    # a re-run skips the finished scenes and tries the failed one again
    again = fill_many([str(scenes / "*.tif")], out, workers=2, method="idw")
    assert len(again["skipped"]) == 3 and len(again["failed"]) == 1 and not again["done"]


@pytest.mark.slow
def test_fill_many_removes_what_a_stopped_worker_left(scenes, tmp_path):
    """A worker stopped mid-write (Ctrl-C, killed) leaves its unlocked temporary file; the run removes those of
    its outputs when it ends, here of a scene that then fails, whose own write never comes to clean it."""
    out = tmp_path / "out"
    out.mkdir()
    left = out / ".corrupt_idw.tif.abcd1234.partial"
    left.write_bytes(b"half a tiff")
    report = fill_many([str(scenes / "corrupt.tif")], out, workers=1, method="idw")
    assert len(report["failed"]) == 1 and not left.exists()


@pytest.mark.slow
def test_fill_many_cli_and_bad_output(scenes, tmp_path, capsys):
    code = cli.main(["fill-many", str(scenes / "scene0.tif"), "--out-dir", str(tmp_path / "o"), "--method", "gauss",
                     "--workers", "1"])
    assert code == 0 and json.loads(capsys.readouterr().out)["done"]
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SceneError, match="(cannot create the output folder|is a file)"):
        fill_many([str(scenes)], blocker / "sub", workers=1)


def test_expand_inputs(scenes):
    assert len(expand_inputs([str(scenes)])) == 4
    assert len(expand_inputs([str(scenes / "scene*.tif")])) == 3
    assert expand_inputs(str(scenes / "scene*.tif")) == expand_inputs([str(scenes / "scene*.tif")])  # one, as is
    assert len(expand_inputs(scenes)) == 4


def test_a_glob_matching_nothing_is_reported_before_any_cluster_starts(scenes, tmp_path, monkeypatch, capsys):
    """Issue 25.10: a pattern that matched nothing started Dask (26 s) before failing."""
    def no_cluster(*args):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr("napari_convnp.batch._connect", no_cluster)
    pattern, missing = str(tmp_path / "nothing*.tif"), str(tmp_path / "missing.tif")
    report = fill_many([pattern, missing], tmp_path / "out", method="idw")
    assert [f["error"] for f in report["failed"]] == [f"{pattern}: no file matches this pattern (input)",
                                                      f"{missing}: no such file or folder (input)"]
    assert cli.main(["fill-many", pattern, "--out-dir", str(tmp_path / "out"), "--method", "idw"]) == 1
    assert capsys.readouterr().err.strip() == f"napari-convnp: error: {pattern}: no file matches this pattern (input)"


def test_fill_many_says_how_many_scenes_are_finished_as_each_ends(scenes, tmp_path):
    from dask.distributed import LocalCluster

    seen = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        report = fill_many([str(scenes)], tmp_path / "out", scheduler=cluster.scheduler_address, method="idw",
                           progress=lambda done, total: seen.append((done, total)))
    assert len(report["done"]) == 3 and len(report["failed"]) == 1  # the corrupt file counts as finished too
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


MAPPED_ARRAYS = """
import ctypes
import numpy as np
from napari_convnp.system import allocator_for_arrays


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2


def mapped(array_bytes):
    \"\"\"Whether glibc gave a new array its own mapping (faulted in anew each time) rather than heap memory.\"\"\"
    before = libc.mallinfo2().hblks
    array = np.ones(array_bytes // 8)
    return libc.mallinfo2().hblks > before


plain = mapped(4 << 20)
with allocator_for_arrays():
    with allocator_for_arrays():  # another task of the worker, in another thread, ending first
        pass
    within = mapped(4 << 20), mapped(64 << 20)
after = mapped(16 << 20)  # larger than any heap memory freed within
print(plain, *within, after)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_arrays_come_from_the_heap_in_a_worker_whose_allocator_dask_fixed():
    """Dask's workers start with MALLOC_TRIM_THRESHOLD_ set, which pins glibc's mmap threshold at 128 KiB: every
    array was mapped anew and faulted in (a fill 2.3x as slow); within allocator_for_arrays arrays up to 16 MiB come
    from the heap (larger ones are still mapped) until the last task inside has left; after, the worker's setting
    holds again."""
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", MAPPED_ARRAYS], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "True", "True"]
