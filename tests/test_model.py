"""The fast inference kernels of the ConvCNP give what the plain formulas give (issue 13: less work per pixel
without touching the weights)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_convnp import model as M


def _scene(scenes=2, bands=3, h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w] / 10.0
    values = np.stack([np.sin(x + b) * np.cos(y * 0.7 + b) + 0.1 * rng.standard_normal((h, w))
                       for b in range(scenes * bands)]).astype(np.float32)
    known = rng.random(values.shape) > 0.25
    known[:, :, 30:44] = False  # a stripe
    return torch.from_numpy(values)[:, None], torch.from_numpy(known.astype(np.float32))[:, None]


def test_fused_inference_matches_the_training_path():
    """In inference the conv+GELU pairs run as one fused oneDNN call; with gradients on, as two calls."""
    model = M.load_model()
    value, mask = _scene()
    ref, ref_mask = _scene(seed=1)
    for refs in ((), (ref, ref_mask)):
        with torch.inference_mode():
            fast = model(value, mask, 3, *refs)
        with torch.enable_grad():
            plain = model(value, mask, 3, *refs)
        for a, b in zip(fast, plain):
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_setconv_matches_a_direct_convolution():
    setconv = M.SetConv((1.5, 4.0, 10.0), 21)
    value, mask = _scene(h=37, w=70)  # lengths that are not multiples of the block
    with torch.no_grad():
        got = setconv(value * mask, mask)
        k = setconv.kernel_1d()[:, None, None]  # (scales, 1, 1, size)
        both = torch.cat([value * mask, mask], 0)
        rows = F.conv2d(F.pad(both, (10, 10, 0, 0)), k)
        out = F.conv2d(F.pad(rows, (0, 0, 10, 10)), k.transpose(2, 3), groups=3)
        signal, density = out.chunk(2, 0)
        want = torch.cat([signal / density.clamp_min(1e-4), torch.log1p(density)], 1)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_band_mean_is_the_mean_over_each_scenes_bands():
    x = torch.randn(6, 5, 8, 9).contiguous(memory_format=torch.channels_last)
    got = M.band_mean(x, 3)
    np.testing.assert_allclose(got.numpy(), x.view(2, 3, 5, 8, 9).mean(1).numpy(), rtol=1e-6, atol=1e-6)
    assert torch.equal(x, x.clone())  # the input is left alone


@pytest.mark.parametrize("shape", [(33, 50), (64, 64)])
def test_harmonic_fill_keeps_known_pixels_and_solves_laplace(shape):
    value, mask = _scene(scenes=1, bands=1, h=shape[0], w=shape[1])
    value = value * mask
    filled = M.harmonic_fill(value, mask, sweeps=400)
    known = mask > 0
    assert torch.equal(filled[known], value[known])
    padded = F.pad(filled, (1, 1, 1, 1), mode="replicate")
    neighbours = (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]) / 4
    assert (filled - neighbours)[~known].abs().max() < 1e-4  # each unknown pixel the mean of its neighbours


def test_biharmonic_fill_converges_to_scikit_images(monkeypatch):
    """Run long enough, the conjugate gradients reach scikit-image's biharmonic inpainting (which the `biharmonic`
    baseline is), away from the image's edge, whose stencils the two treat differently."""
    monkeypatch.setattr(M, "CG_TOLERANCE", 0.0)  # no early stop
    from skimage.restoration import inpaint_biharmonic

    from napari_convnp.masks import simulate_slc_off

    y, x = np.mgrid[:96, :96] / 20
    image = np.sin(x) * np.cos(1.3 * y) + 0.1 * np.random.default_rng(0).normal(size=x.shape)
    gaps = simulate_slc_off((96, 96), seed=1, pixel_size=30, crop_offset=(0, 0))
    want = inpaint_biharmonic(image * ~gaps, gaps)
    value = torch.from_numpy(image.astype(np.float32))[None, None]
    mask = torch.from_numpy(~gaps).float()[None, None]
    start = M.harmonic_fill(value * mask, mask, 5)
    got = M.biharmonic_fill(mask, start, 1000)[0, 0].numpy()
    inside = np.zeros_like(gaps)
    inside[4:-4, 4:-4] = True
    assert np.array_equal(got[~gaps], image.astype(np.float32)[~gaps])
    assert np.abs(got - want)[gaps & inside].max() < 1e-4
    assert np.abs(start[0, 0].numpy() - want)[gaps & inside].mean() > 0.05  # the harmonic start is not it


def test_the_mean_is_blended_with_the_biharmonic_fill_only_where_no_reference_is_known():
    import dataclasses

    from napari_convnp.adapt import calibrated

    model = M.load_model()
    value, mask = _scene()
    with_weight = {w: calibrated(model, biharmonic_weight=w) for w in (0.0, 0.4, 1.0)}
    with torch.no_grad():
        (network, var0), (blend, var), (smooth, _) = (m(value, mask, 3) for m in with_weight.values())
        start = M.harmonic_fill(value * mask, mask, model.config.harmonic_iters)
        np.testing.assert_allclose(smooth.numpy(), M.biharmonic_fill(mask, start, model.config.biharmonic_iters)
                                   .numpy(), atol=1e-5)
        np.testing.assert_allclose(blend.numpy(), (0.6 * network + 0.4 * smooth).numpy(), atol=1e-5)
        assert torch.equal(var, var0)  # the variance is the network's
        reference, known = value * 1.2 + 0.1, torch.ones_like(mask)
        assert torch.equal(with_weight[0.4](value, mask, 3, reference, known)[0],
                           with_weight[0.0](value, mask, 3, reference, known)[0])
    assert dataclasses.asdict(model.config)["biharmonic_weight"] > 0  # the shipped prior blends


def test_where_the_reference_is_known_the_mean_moves_towards_the_reference_fills_by_the_weights():
    """mean = (1 − a − b)·network + a·reference base + b·regression fill where the reference is known, the same
    as without the weights elsewhere; the regression fill is the local fit plus a biharmonic fill of its residual."""
    from napari_convnp.adapt import calibrated

    model = M.load_model()
    value, mask = _scene()
    reference = value * 1.2 + 0.1 + 0.05 * torch.sin(torch.arange(value.shape[-1]) / 3.0)
    known = torch.ones_like(mask)
    known[..., :20, :] = 0  # the reference's own gap
    corners = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.3, 0.2)]
    with torch.no_grad():
        network, ref_base, regression, blend = (
            calibrated(model, reference_base_weight=a, regression_weight=b)(value, mask, 3, reference, known)[0]
            for a, b in corners)
        harmonic = M.harmonic_fill(value * mask, mask, model.config.harmonic_iters)
        want_base, want_regression = M.reference_fills(value * mask, mask, reference * known, known,
                                                       model.config.regression_window, model.config.harmonic_iters,
                                                       harmonic, model.config.biharmonic_iters)
    where = known.bool()
    np.testing.assert_allclose(ref_base[where].numpy(), want_base[where].numpy(), atol=1e-4)
    np.testing.assert_allclose(regression[where].numpy(), want_regression[where].numpy(), atol=1e-4)
    assert (regression - ref_base)[where].abs().mean() > 1e-3  # two different fills
    np.testing.assert_allclose(blend.numpy(), torch.where(where, 0.5 * network + 0.3 * ref_base + 0.2 * regression,
                                                          network).numpy(), atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_up_block_is_the_block_on_the_upsampled_concatenation(dtype):
    """The decoder's phase-kernel form gives what the block gives on cat([nearest ×2 upsampling, skip]),
    edges included (zero padding at both resolutions)."""
    torch.manual_seed(0)
    block = M._block(24 + 12, 12)
    x, skip = torch.randn(2, 24, 9, 14), torch.randn(2, 12, 18, 28)
    with torch.no_grad():
        want = block(torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skip], 1))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            got = M.up_block(block, x, skip)
    tolerance = 1e-5 if dtype == torch.float32 else 0.05
    np.testing.assert_allclose(got.float().numpy(), want.numpy(), rtol=tolerance, atol=tolerance)


def test_no_reference_is_a_reference_of_zeros():
    """Without a known reference pixel the model leaves the (all-zero) reference features out; the answer is
    the one it gives with a reference that is everywhere unknown."""
    model = M.load_model()
    value, mask = _scene()
    with torch.no_grad():
        skipped = model(value, mask, 3)
        zeros = torch.zeros_like(value)
        unknown_reference = model(value, mask, 3, zeros, zeros)
        half = model.inp.weight.shape[1] // 2
        feats = torch.cat([value * mask, mask, model.setconv(value * mask, mask),
                           M.harmonic_fill(value * mask, mask, model.config.harmonic_iters),
                           zeros, zeros, zeros], 1)
        assert feats.shape[1] == half  # the full feature set, reference features included
        full = model._encode(feats, 3)
        short = model._encode(feats[:, :half - 3], 3)
    np.testing.assert_allclose(short.numpy(), full.numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(skipped, unknown_reference):
        assert torch.equal(a, b)
