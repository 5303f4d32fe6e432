"""bfloat16 only where the CPU runs it natively: elsewhere a fill asked for it runs in float32 and says why."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_convnp import cli, cpu_kernels
from napari_convnp.inpaint import fill
from napari_convnp.masks import simulate_slc_off

from .conftest import write_geotiff

NOT_NATIVE = "this CPU has no native bfloat16 (test)"


@pytest.fixture
def no_native_bfloat16(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "bfloat16_note", lambda: NOT_NATIVE)


def _scene():
    y, x = np.mgrid[:96, :96] / 30.0
    bands = np.stack([np.sin(x) + np.cos(y), np.cos(x - y)]).astype(np.float32) * 100 + 1000
    return bands, simulate_slc_off((96, 96), seed=1, pixel_size=30)


def test_bfloat16_on_a_cpu_without_it_runs_in_float32_and_says_so(no_native_bfloat16):
    bands, gaps = _scene()
    with pytest.warns(RuntimeWarning, match="runs in float32 here: this CPU has no native bfloat16"):
        slow = fill(bands, gaps, device="cpu", precision="bfloat16", biharmonic_weight=0.0)
    plain = fill(bands, gaps, device="cpu", precision="float32", biharmonic_weight=0.0)
    assert slow.precision == "float32"
    np.testing.assert_array_equal(slow.mean, plain.mean)


def test_the_command_line_notes_the_fallback_before_the_fill(no_native_bfloat16, smooth_scene, tmp_path, capsys):
    mask = write_geotiff(tmp_path / "mask.tif", simulate_slc_off((160, 192), seed=1, pixel_size=30)[None] * np.uint8(1))
    code = cli.main(["fill", str(smooth_scene), "--mask", str(mask), "--out", str(tmp_path / "out.tif"),
                     "--precision", "bfloat16", "--device", "cpu", "--biharmonic-weight", "0"])
    assert code == 0
    err = capsys.readouterr().err
    assert "note: --precision bfloat16 runs in float32 here" in err and NOT_NATIVE in err


def test_float32_keeps_the_fused_path_when_bfloat16_cannot_take_it(monkeypatch):
    """oneDNN refusing the fused bfloat16 call must not send float32 to the slower plain layers too."""
    calls = []
    real = cpu_kernels._fused_conv_gelu

    def fused(conv, x):
        calls.append(x.dtype)
        if x.dtype == torch.bfloat16:
            raise RuntimeError("bf16 path needs the cpu support avx_ne_convert or avx512bw, avx512vl and avx512dq")
        return real(conv, x)

    monkeypatch.setattr(cpu_kernels, "_fused_conv_gelu", fused)
    monkeypatch.setattr(cpu_kernels, "_unfused_dtypes", set())
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 16, 16)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as the fill runs bfloat16
            half = cpu_kernels.conv_gelu(conv, x.bfloat16())
        full = cpu_kernels.conv_gelu(conv, x)
        cpu_kernels.conv_gelu(conv, x)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(full, torch.nn.functional.gelu(conv(x)), atol=1e-5, rtol=1e-4)
    assert calls == [torch.bfloat16, torch.float32, torch.float32]  # float32 still fused; bfloat16 tried once
