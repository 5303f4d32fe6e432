"""The network's UNet as ONNX exports it (issue 26, item 1; `benchmarks/engine.py`): the exporter sees the plain
layers (the fused oneDNN call and the decoder's in-place phase sums do not trace: the latter exported silently
wrong), and the exported graph gives PyTorch's float32 answer."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_convnp import cpu_kernels
from napari_convnp.model import load_model

from .test_model import _scene


def _features(scenes=2, bands=3, channels=9):
    torch.manual_seed(0)
    feats = torch.randn(scenes * bands, channels, 48, 80)
    feats[:, 1] = (feats[:, 1] > 0).float()  # the context mask channel
    return feats


def test_the_form_the_exporter_sees_gives_the_fast_paths_answer(monkeypatch):
    model = load_model()
    feats = _features()
    with torch.inference_mode():
        fast = model.unet([feats.clone()], 3)
        monkeypatch.setattr(cpu_kernels, "exporting", lambda: True)
        plain = model.unet([feats.clone()], 3)
    np.testing.assert_allclose(plain.numpy(), fast.numpy(), atol=1e-5, rtol=0)


def test_the_unet_alone_is_the_networks_middle():
    """forward = features → unet → head outputs: the UNet gets the features as a list it empties (no caller holds
    them while it runs) and the model's answer is unchanged by the split (the fused path is checked against the
    training path in test_model)."""
    model = load_model()
    value, mask = _scene(scenes=1, bands=3)
    calls = []
    real = model.unet

    def spy(parts, n_bands):
        calls.append((len(parts), n_bands))
        raw = real(parts, n_bands)
        calls.append(len(parts))
        return raw

    model.unet = spy
    with torch.inference_mode():
        mean, var = model(value, mask, 3)
    assert calls == [(4, 3), 0] and mean.shape == var.shape == value.shape


def test_the_exported_graph_gives_pytorchs_float32_answer(tmp_path, monkeypatch):
    pytest.importorskip("onnx", reason="onnx is not installed (only benchmarks/engine.py needs it)")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (only benchmarks/engine.py needs it)")
    monkeypatch.setenv("ENGINE_GRAPHS", str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    monkeypatch.delitem(sys.modules, "engine", raising=False)
    from engine import OnnxRuntimeUNet

    model = load_model()
    unet = OnnxRuntimeUNet(model)
    for scenes, channels in ((2, 9), (1, 12)):  # a batch of two scenes, and with a reference's features
        feats = _features(scenes, 3, channels)
        with torch.inference_mode():
            want = model.unet([feats.clone()], 3)
        got = unet([feats.clone()], 3)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4, rtol=0)
