"""The fast inference kernels of the ConvCNP give what the plain formulas give (issue 13: less work per pixel
without touching the weights)."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_convnp import model as M
from napari_convnp import solvers


def _scene(scenes=2, bands=3, h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w] / 10.0
    values = np.stack([np.sin(x + b) * np.cos(y * 0.7 + b) + 0.1 * rng.standard_normal((h, w))
                       for b in range(scenes * bands)]).astype(np.float32)
    known = rng.random(values.shape) > 0.25
    known[:, :, 30:44] = False  # a stripe
    return torch.from_numpy(values)[:, None], torch.from_numpy(known.astype(np.float32))[:, None]


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(33, 50), (64, 64)])
def test_harmonic_fill_keeps_known_pixels_and_solves_laplace(shape):
    value, mask = _scene(scenes=1, bands=1, h=shape[0], w=shape[1])
    value = value * mask
    filled = solvers.harmonic_fill(value, mask, sweeps=400)
    known = mask > 0
    assert torch.equal(filled[known], value[known])
    padded = F.pad(filled, (1, 1, 1, 1), mode="replicate")
    neighbours = (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]) / 4
    assert (filled - neighbours)[~known].abs().max() < 1e-4  # each unknown pixel the mean of its neighbours


def test_biharmonic_fill_converges_to_scikit_images(monkeypatch):
    """Run long enough, the conjugate gradients reach scikit-image's biharmonic inpainting (which the `biharmonic`
    baseline is), away from the image's edge, whose stencils the two treat differently."""
    monkeypatch.setattr(solvers, "CG_TOLERANCE", 0.0)  # no early stop
    from skimage.restoration import inpaint_biharmonic

    from napari_convnp.masks import simulate_slc_off

    y, x = np.mgrid[:96, :96] / 20
    image = np.sin(x) * np.cos(1.3 * y) + 0.1 * np.random.default_rng(0).normal(size=x.shape)
    gaps = simulate_slc_off((96, 96), seed=1, pixel_size=30, crop_offset=(0, 0))
    want = inpaint_biharmonic(image * ~gaps, gaps)
    value = torch.from_numpy(image.astype(np.float32))[None, None]
    mask = torch.from_numpy(~gaps).float()[None, None]
    start = solvers.harmonic_fill(value * mask, mask, 5)
    got = solvers.biharmonic_fill(mask, start, 1000)[0, 0].numpy()
    inside = np.zeros_like(gaps)
    inside[4:-4, 4:-4] = True
    assert np.array_equal(got[~gaps], image.astype(np.float32)[~gaps])
    assert np.abs(got - want)[gaps & inside].max() < 1e-4
    assert np.abs(start[0, 0].numpy() - want)[gaps & inside].mean() > 0.05  # the harmonic start is not it


def test_the_mean_is_blended_with_the_biharmonic_fill_only_where_no_reference_is_known():
    import dataclasses

    from napari_convnp.calibration import calibrated

    model = M.load_model()
    value, mask = _scene()
    with_weight = {w: calibrated(model, biharmonic_weight=w) for w in (0.0, 0.4, 1.0)}
    with torch.no_grad():
        (network, var0), (blend, var), (smooth, _) = (m(value, mask, 3) for m in with_weight.values())
        start = solvers.harmonic_fill(value * mask, mask, model.config.harmonic_iters)
        np.testing.assert_allclose(smooth.numpy(), solvers.biharmonic_fill(mask, start, model.config.biharmonic_iters)
                                   .numpy(), atol=1e-5)
        np.testing.assert_allclose(blend.numpy(), (0.6 * network + 0.4 * smooth).numpy(), atol=1e-5)
        assert torch.equal(var, var0)  # the variance is the network's
        reference, known = value * 1.2 + 0.1, torch.ones_like(mask)
        assert torch.equal(with_weight[0.4](value, mask, 3, reference, known)[0],
                           with_weight[0.0](value, mask, 3, reference, known)[0])
    assert dataclasses.asdict(model.config)["biharmonic_weight"] > 0  # the shipped prior blends


def test_where_the_reference_is_known_the_mean_moves_towards_the_reference_fills_by_the_weights():
    """mean = (1 − Σw)·network + Σ w·fill over the classical two-date fills where the reference is known, the same
    as without the weights elsewhere."""
    from napari_convnp.calibration import calibrated

    model = M.load_model()
    value, mask = _scene()
    reference = value * 1.2 + 0.1 + 0.05 * torch.sin(torch.arange(value.shape[-1]) / 3.0)
    known = torch.ones_like(mask)
    known[..., :20, :] = 0  # the reference's own gap
    names = M.REFERENCE_FILLS
    corners = [dict.fromkeys(names, 0.0)] + [{n: float(n == name) for n in names} for name in names]
    with torch.no_grad():
        network, *alone = (calibrated(model, **{f"{n}_weight": w for n, w in weights.items()})(
            value, mask, 3, reference, known)[0] for weights in corners)
        blend = calibrated(model, reference_base_weight=0.3, multiband_weight=0.2)(value, mask, 3, reference, known)[0]
        harmonic = solvers.harmonic_fill(value * mask, mask, model.config.harmonic_iters)
        want = M.reference_fills(value * mask, mask, reference * known, known, model.config, harmonic, 3)
    where = known.bool()
    for name, got in zip(names, alone):
        np.testing.assert_allclose(got[where].numpy(), want[name][where].numpy(), atol=1e-4, err_msg=name)
    for a, b in itertools.combinations(names, 2):
        assert (want[a] - want[b])[where].abs().mean() > 1e-3, (a, b)  # different fills
    expected = 0.5 * network + 0.3 * alone[0] + 0.2 * alone[1]
    np.testing.assert_allclose(blend.numpy(), torch.where(where, expected, network).numpy(), atol=1e-4)


def test_the_multiband_fit_follows_a_change_that_differs_from_band_to_band():
    """A scene whose bands are each a different mix of the other date's bands (a change of season) is
    predicted by the multiband fit (up to the ridge's shrinkage), not by a fit on the same band alone."""
    rng = np.random.default_rng(1)
    ref = torch.from_numpy(rng.normal(size=(6, 1, 64, 64)).astype(np.float32))
    mix = torch.from_numpy(rng.normal(size=(3, 3)).astype(np.float32))
    scene = torch.cat([torch.einsum("bc,nchw->nbhw", mix, r.view(1, 3, 64, 64)).view(3, 1, 64, 64) + 0.5
                       for r in ref.split(3)])
    mask = torch.from_numpy(rng.random((6, 1, 64, 64)) > 0.3).float()
    fit, fitted = solvers.multiband_fit(scene * mask, mask, ref, torch.ones_like(mask), 3)
    assert fitted.shape == (2, 1, 64, 64)
    single = solvers.local_linear_fit(scene * mask, mask, ref, torch.ones_like(mask), 31)
    multiband_error, single_error = (fit - scene).abs().mean(), (single - scene).abs().mean()
    assert multiband_error < 0.15 * scene.std() and multiband_error < single_error / 4


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
                           solvers.harmonic_fill(value * mask, mask, model.config.harmonic_iters),
                           zeros, zeros, zeros], 1)
        assert feats.shape[1] == half  # the full feature set, reference features included
        full = model._encode(feats, 3)
        short = model._encode(feats[:, :half - 3], 3)
    np.testing.assert_allclose(short.numpy(), full.numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(skipped, unknown_reference):
        assert torch.equal(a, b)
