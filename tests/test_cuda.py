"""The GPU path: the same fill on CUDA as on the CPU, and the retry on smaller tiles when the GPU runs out of
memory. These run only where torch sees a CUDA GPU (they skip elsewhere, CI included)."""
from __future__ import annotations

import numpy as np
import pytest

from napari_convnp import masks
from napari_convnp.inpaint import fill

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def smooth_bands(size: int, n_bands: int = 3) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / 40.0
    layers = [np.sin(x) + np.cos(y), np.sin(x + y), np.cos(x * 0.7) * np.sin(y * 1.3)]
    return (1000 + 400 * np.stack(layers[:n_bands])).astype(np.float32)


def stripes(size: int) -> np.ndarray:
    return masks.simulate_slc_off((size, size), seed=0, pixel_size=30)


def gap_rmse(mean, bands, gaps) -> float:
    return float(np.sqrt(np.mean((mean - bands)[:, gaps] ** 2)))


def test_cuda_fill_equals_cpu_fill():
    bands, gaps = smooth_bands(384), stripes(384)
    on_cpu = fill(bands, gaps, device="cpu", tile=256)
    on_gpu = fill(bands, gaps, device="cuda", tile=256)
    assert on_gpu.device == "cuda"
    # cuDNN convolves in TF32 (10-bit mantissa) by default: on an H200 the means differed by up to 0.23 on values
    # of 1000 ± 800
    np.testing.assert_allclose(on_gpu.mean, on_cpu.mean, atol=1.0)
    np.testing.assert_allclose(on_gpu.variance, on_cpu.variance, rtol=0.02, atol=0.01)


def test_cuda_bfloat16_is_close_to_float32():
    bands, gaps = smooth_bands(384), stripes(384)
    full = fill(bands, gaps, device="cuda")
    half = fill(bands, gaps, device="cuda", precision="bfloat16")
    assert gap_rmse(half.mean, bands, gaps) == pytest.approx(gap_rmse(full.mean, bands, gaps), rel=0.05, abs=0.5)


def test_cuda_with_reference_and_adaptation_equals_cpu():
    bands, gaps = smooth_bands(256), stripes(256)
    reference = bands * 0.9 + 30
    on_cpu = fill(bands, gaps, device="cpu", reference=reference, adapt_steps=3)
    on_gpu = fill(bands, gaps, device="cuda", reference=reference, adapt_steps=3)
    assert gap_rmse(on_gpu.mean, bands, gaps) == pytest.approx(gap_rmse(on_cpu.mean, bands, gaps), rel=0.05, abs=0.5)


def test_cuda_out_of_memory_retries_on_smaller_tiles():
    """With the GPU capped at about twice what 256-pixel tiles need, 1024-pixel tiles run out of memory: the
    fill warns, goes on with smaller tiles and fills as well as 256-pixel tiles do."""
    bands, gaps = smooth_bands(1024, 1), stripes(1024)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    small = fill(bands, gaps, device="cuda", tile=256)
    need = torch.cuda.max_memory_reserved()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(2 * need / total)
    try:
        with pytest.warns(RuntimeWarning, match="out of memory; going on with"):
            retried = fill(bands, gaps, device="cuda", tile=1024)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert gap_rmse(retried.mean, bands, gaps) == pytest.approx(gap_rmse(small.mean, bands, gaps), rel=0.05, abs=0.5)
