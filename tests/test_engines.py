"""Other engines for the network's UNet (issue 26): OpenVINO gives PyTorch's float32 answer, its graph is exported
once and kept, and an engine that cannot run is one line naming the problem (the extra to install)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from napari_convnp import cli, engines
from napari_convnp.errors import FillError
from napari_convnp.inpaint import fill
from napari_convnp.model import load_model

from .test_cli import gap_mask, make_tiff, smooth
from .test_model import _scene


def _have_engine() -> bool:
    try:
        engines.check_engine("openvino")
    except FillError:
        return False
    return True


needs_openvino = pytest.mark.skipif(not _have_engine(), reason="openvino or onnx is not installed (the optional "
                                    "extra: pip install 'napari-convnp[engine]')")


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    """One cache folder for this module's tests: the graph is exported once (seconds), not per test."""
    folder = tmp_path_factory.getbasetemp() / "engine-cache"
    monkeypatch.setenv("NAPARI_CONVNP_CACHE", str(folder))
    return folder


@needs_openvino
def test_openvino_float32_gives_pytorchs_mean_and_variance(cache):
    model = load_model()
    value, mask = _scene(scenes=2, bands=3, h=48, w=80)
    ref, ref_mask = value * 0.9 + 0.1, (torch.rand_like(mask) > 0.3).float()
    engine = engines.with_engine(model, "openvino", "float32")
    with torch.inference_mode():
        for extra in ((), (ref, ref_mask)):  # single image (9 feature channels) and with a reference (12)
            want = model(value, mask, 3, *extra)
            got = engine(value, mask, 3, *extra)
            for a, b in zip(got, want):
                np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=0)
    assert len(list(cache.glob("*.onnx"))) == 2  # one graph per feature count, kept


@needs_openvino
def test_the_exported_graph_is_reused_by_a_later_engine(cache):
    model = load_model()
    value, mask = _scene(scenes=1, bands=3)
    with torch.inference_mode():
        engines.with_engine(model, "openvino")(value, mask, 3)
        graphs = {path: path.stat().st_mtime_ns for path in cache.glob("*.onnx")}
        engines.with_engine(load_model(), "openvino", "bfloat16")(value, mask, 3)
    assert graphs and {path: path.stat().st_mtime_ns for path in cache.glob("*.onnx")} == graphs


@needs_openvino
def test_fill_with_openvino_keeps_known_pixels_and_fills_like_pytorch(cache):
    bands = smooth(c=3, h=64, w=96).astype(np.float32)
    gaps = np.zeros(bands.shape[1:], bool)
    gaps[20:26] = True
    want = fill(bands, gaps, device="cpu", biharmonic_weight=0)
    got = fill(bands, gaps, device="cpu", biharmonic_weight=0, engine="openvino")
    np.testing.assert_array_equal(got.mean[:, ~gaps], bands[:, ~gaps])
    np.testing.assert_allclose(got.mean, want.mean, atol=1e-4 * bands.std(), rtol=0)


def test_an_unknown_engine_is_a_fill_error():
    with pytest.raises(FillError, match="unknown engine 'tensorrt': use pytorch or openvino"):
        fill(smooth(c=2).astype(np.float32), np.eye(64, 96, dtype=bool), device="cpu", engine="tensorrt")


@pytest.mark.parametrize("device, adapt, problem", [("cuda", 0, "runs on the CPU"),
                                                    ("cpu", 5, "test-time adaptation")])
def test_openvino_refuses_a_gpu_and_adaptation(device, adapt, problem):
    with pytest.raises(FillError, match=problem):
        engines.check_engine("openvino", device, adapt)


@pytest.mark.parametrize("missing", ["openvino", "onnx"])
def test_a_missing_package_names_the_extra_to_install(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    with pytest.raises(FillError, match=rf"needs the package '{missing}': pip install 'napari-convnp\[engine\]'"):
        engines.check_engine("openvino", "cpu")


def test_the_command_line_names_the_extra_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)
    scene = make_tiff(tmp_path / "scene.tif", smooth())
    out = tmp_path / "out.tif"
    code = cli.main(["fill", str(scene), "--out", str(out), "--mask", str(gap_mask(tmp_path / "m.tif")),
                     "--engine", "openvino", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--engine" in err[0] and "napari-convnp[engine]" in err[0]
    assert not out.exists()
