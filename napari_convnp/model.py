"""The on-grid ConvCNP: a SetConv encoder with a density channel, a UNet, a Gaussian head.

Band-agnostic: every band runs through the same network as its own single-band image, and a
cross-band path (the mean over a scene's bands of each band's features, a DeepSets pooling) lets a
band use pixels that are known in other bands. Works for any band count.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = Path(__file__).parent / "weights" / "convcnp.pt"


def band_stats(bands: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation of the known pixels: z-scores make DN and reflectance
    look alike to the model. Returns (offsets, scales), each of shape (C,)."""
    c = len(bands)
    offsets = np.zeros(c, np.float32)
    scales = np.ones(c, np.float32)
    # One pass over blocks of rows, every band at once (a file read window by window is decoded once), with
    # float64 sums of the values less a per-band shift (the first block's mean), which keeps them accurate.
    count, total, squares, shift = np.zeros(c), np.zeros(c), np.zeros(c), np.full(c, np.nan)
    step = max(1, 2 ** 22 // max(1, c * bands.shape[-1]))
    for r in range(0, bands.shape[-2], step):
        block = np.asarray(bands[:, r:r + step], np.float64)
        ok = np.asarray(known[:, r:r + step], bool)
        for b in range(c):
            values = block[b][ok[b]]
            if values.size and np.isnan(shift[b]):
                shift[b] = values.mean()
            values -= shift[b]
            count[b] += values.size
            total[b] += values.sum()
            squares[b] += np.dot(values, values)
    for b in range(c):
        if count[b]:
            mean = total[b] / count[b]
            offsets[b] = shift[b] + mean
            std = math.sqrt(max(squares[b] / count[b] - mean ** 2, 0.0))
            scales[b] = max(std, 1e-6 * max(abs(offsets[b]), 1.0), 1e-12)
    return offsets, scales


def normalise(bands: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-band z-scores (see band_stats); returns (normalised bands, offsets, scales)."""
    offsets, scales = band_stats(bands, known)
    normed = (bands - offsets[:, None, None]) / scales[:, None, None]
    return normed.astype(np.float32), offsets, scales


@dataclass
class ModelConfig:
    setconv_scales: tuple[float, ...] = (1.5, 4.0, 10.0)  # initial length scales (pixels) of the SetConv kernels
    setconv_size: int = 21  # kernel size of the SetConv; wider than the widest gap (14 px at 30 m)
    channels: tuple[int, ...] = (12, 24, 48, 64, 96)  # UNet widths per resolution level; sized for 2-core CPUs
    min_std: float = 0.01  # floor of the predictive standard deviation, in normalised units
    harmonic_iters: int = 5  # red-black SOR sweeps per multigrid level of the harmonic base
    reference: bool = False  # takes another date of the same place as extra context (checkpoints before it: no)
    # side(s) of the local linear fit of the scene on the reference, several: the mean of their fits; chosen on the
    # validation pairs (inside the model, whose network corrects the fit; the classical `regression` keeps 31)
    regression_window: int | tuple[int, ...] = (11, 21, 31)
    reference_variance_scale: float = 1.0  # calibration of the variance where a reference is known (fitted on val)
    # the mean blended with the biharmonic fill by this weight where no reference is known (chosen per scene by
    # `adapt.scene_calibration`; 0 = the network's mean alone), and the conjugate-gradient steps of that fill
    biharmonic_weight: float = 0.0
    biharmonic_iters: int = 50
    # where the reference is known, the mean moved towards the reference base and the multiband fill
    # (`reference_fills`) by these weights (chosen per scene by `adapt.scene_calibration`; 0 = the network's mean)
    reference_base_weight: float = 0.0
    multiband_weight: float = 0.0


class SetConv(nn.Module):
    """Positive-weight depthwise convolution of (value × mask) and of the mask, normalised by the latter.

    One Gaussian kernel per length scale, with learnable scales: the density channel says how much
    context is near, the normalised channel gives a smooth estimate from that context.
    """

    def __init__(self, scales, size):
        super().__init__()
        self.log_scale = nn.Parameter(torch.log(torch.tensor(scales, dtype=torch.float32)))
        self.size = size

    def kernel_1d(self) -> torch.Tensor:
        """(scales, size): a Gaussian is separable, so rows then columns cost 2·size, not size²."""
        r = torch.arange(self.size, dtype=torch.float32, device=self.log_scale.device) - self.size // 2
        return torch.exp(-0.5 * r[None] ** 2 / torch.exp(self.log_scale)[:, None] ** 2)  # positive by construction

    def forward(self, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bands = torch.cat([value * mask, mask], 0)[:, 0]  # (2·N, H, W): signal and density in one pass
        matrices = _band_matrices(self.kernel_1d(), SETCONV_BLOCK).to(value.dtype)
        rows = _blur_last_axis(bands, matrices, each_plane=False)  # (2·N, H, scales, W)
        both = _blur_last_axis(rows.permute(0, 2, 3, 1), matrices, each_plane=True).transpose(-1, -2)
        signal, density = both.chunk(2, 0)
        return torch.cat([signal / density.clamp_min(1e-4), torch.log1p(density)], 1)


SETCONV_BLOCK = 64  # samples per block of the banded products below (32–128 measure alike)


def _band_matrices(kernels: torch.Tensor, block: int) -> torch.Tensor:
    """(scales, block + size − 1, block): column j of matrix s holds kernel s at rows j … j + size − 1, so that
    a block of samples (with its margins) times the matrix is the block cross-correlated with the kernel."""
    size = kernels.shape[1]
    offset = torch.arange(block + size - 1, device=kernels.device)[:, None] - torch.arange(block, device=kernels.device)
    inside = (offset >= 0) & (offset < size)
    return torch.where(inside, kernels[:, offset.clamp(0, size - 1)], kernels.new_zeros(()))


def _blur_last_axis(x: torch.Tensor, matrices: torch.Tensor, each_plane: bool) -> torch.Tensor:
    """x (…, L) cross-correlated along its last axis with every kernel, zero padded, as banded matrix products
    over blocks of samples: ~3× faster on CPUs than a depthwise convolution with a 21-tap kernel.

    each_plane False: x (N, H, L) → (N, H, scales, L), every kernel on every row. True: x (N, scales, W, L) →
    the same shape, plane s with kernel s only."""
    block, size = matrices.shape[-1], matrices.shape[-2] - matrices.shape[-1] + 1
    length = x.shape[-1]
    n_blocks = -(-length // block)
    padded = F.pad(x, (size // 2, size // 2 + n_blocks * block - length))
    blocks = padded.unfold(-1, block + size - 1, block)  # (…, n_blocks, block + size − 1), a view
    if each_plane:
        out = torch.einsum("aswnk,skj->aswnj", blocks, matrices)
    else:
        out = torch.einsum("ahnk,skj->ahsnj", blocks, matrices)
    return out.flatten(-2)[..., :length]


REFERENCE_FEATURES = ("reference value", "reference known", "reference fill minus harmonic fill")
SOR_OMEGA = 1.8  # over-relaxation: 5 red-black sweeps a level come within 0.01 dB of the converged fill


def harmonic_fill(value: torch.Tensor, mask: torch.Tensor, sweeps: int) -> torch.Tensor:
    """Laplace interpolation of the context: the smoothest surface through the known pixels (each
    unknown pixel the mean of its four neighbours), solved coarse to fine (multigrid, red-black SOR).

    A strong classical fill that costs a few convolutions; the network learns a correction of it
    instead of having to learn interpolation itself. Always float32: many sweeps in bfloat16 drift.
    """
    with torch.autocast(value.device.type, enabled=False):
        value, mask = value.float(), mask.float()
        h, w = value.shape[-2:]
        if min(h, w) >= 4 and (mask < 1).any():
            coarse_mask = F.avg_pool2d(mask, 2, ceil_mode=True)
            coarse_value = F.avg_pool2d(value * mask, 2, ceil_mode=True) / coarse_mask.clamp_min(1e-6)
            coarse = harmonic_fill(coarse_value, (coarse_mask > 0).float(), sweeps)
            x = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)[..., :h, :w]
        else:  # coarsest level: the mean of the known pixels
            x = (value * mask).sum((-2, -1), keepdim=True) / mask.sum((-2, -1), keepdim=True).clamp_min(1)
            x = x.expand_as(value)
        free = 1 - mask
        x = value * mask + free * x
        parity = (torch.arange(h, device=value.device)[:, None] + torch.arange(w, device=value.device)) % 2
        # x ← x + ω·colour·(mean of 4 neighbours − x), written as x·keep + step·(sum of 4 neighbours)
        steps = [(SOR_OMEGA / 4) * free * (parity == p) for p in (0, 1)]
        keeps = [1 - 4 * step for step in steps]
        for _ in range(sweeps):
            for step, keep in zip(steps, keeps):
                x = x * keep + step * _neighbour_sum(x)
        return x


def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of each pixel's four neighbours, the edges replicated: four shifted slices of the padded image (a
    1-channel conv2d is ~5× slower on CPUs)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    out = p[..., :-2, 1:-1] + p[..., 2:, 1:-1]
    out += p[..., 1:-1, :-2]
    out += p[..., 1:-1, 2:]
    return out


def _laplacian(x: torch.Tensor) -> torch.Tensor:
    """The 5-point Laplacian with edge-replicated borders (symmetric: its square is the biharmonic energy's)."""
    return _neighbour_sum(x).sub_(x, alpha=4)


CG_TOLERANCE = 1e-3  # conjugate gradients stop early once the residual is this fraction of the first one
CG_PIXELS = 2 ** 20  # pixels the conjugate gradients work on at once (more images a pass: fewer, larger operations)


def biharmonic_fill(mask: torch.Tensor, start: torch.Tensor, iterations: int) -> torch.Tensor:
    """Biharmonic interpolation of the context (the surface of least squared Laplacian through the known pixels,
    as scikit-image's inpaint_biharmonic): up to `iterations` conjugate-gradient steps from `start` (the harmonic
    fill, whose known pixels hold their values), which settle the short distances across a stripe first; they stop
    early once every image has converged (thin gaps, as in a scene's centre). A biharmonic surface carries the
    slopes on both sides of a gap into it where the harmonic one flattens them; its errors differ enough from the
    network's that a blend of the two beats each (`ConvCNP.forward`). Always float32. Several images a pass: few,
    large operations (one image at a time is 3x slower where OpenMP threads sleep between them)."""
    with torch.autocast(start.device.type, enabled=False):
        group = max(1, CG_PIXELS // start[0].numel())  # images a pass: the solver's planes stay small
        return torch.cat([_conjugate_gradients(m == 0, s.float().clone(), iterations)
                          for m, s in zip(mask.split(group), start.split(group))])


def _conjugate_gradients(free: torch.Tensor, x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Minimises the squared Laplacian of each image of x over its `free` pixels, in place."""
    residual = _laplacian(_laplacian(x)).mul_(free).neg_()
    direction = residual.clone()
    norm = first = _dot(residual, residual)
    for step in range(iterations):
        if step and step % 10 == 0 and bool((norm <= CG_TOLERANCE ** 2 * first).all()):  # a sync: now and then
            break
        product = _laplacian(_laplacian(direction)).mul_(free)
        alpha = norm / _dot(direction, product).clamp_min(1e-30)
        x.addcmul_(alpha, direction)
        residual.addcmul_(alpha, product, value=-1)
        new_norm = _dot(residual, residual)
        direction.mul_(new_norm / norm.clamp_min(1e-30)).add_(residual)
        norm = new_norm
    return x


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image (first axis) dot products, shaped to broadcast over the images."""
    return torch.einsum("nchw,nchw->n", a, b).view(-1, 1, 1, 1)


def _box_means(x: torch.Tensor, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """Means over size×size windows (zero padded) for each size, from one table of running sums: the cost does
    not grow with the window. The sums are float64, so that a tile's totals keep the precision of its values."""
    h, w = x.shape[-2:]
    pad = max(sizes) // 2
    sums = F.pad(x.double(), (pad + 1, pad, pad + 1, pad)).cumsum(-2).cumsum(-1)
    means = []
    for size in sizes:
        o = pad - size // 2  # where this window's sums start in the table
        lo, hi = slice(o, o + h), slice(o + size, o + size + h)
        left, right = slice(o, o + w), slice(o + size, o + size + w)
        box = sums[..., hi, right] - sums[..., lo, right] - sums[..., hi, left] + sums[..., lo, left]
        means.append((box / (size * size)).float())
    return means


def local_linear_fit(value: torch.Tensor, mask: torch.Tensor, ref: torch.Tensor, ref_mask: torch.Tensor,
                     window: int | tuple[int, ...], min_pixels: float = 24.0, ridge: float = 0.05) -> torch.Tensor:
    """The scene predicted from the reference by a linear fit in a window around every pixel, over the
    pixels known in both (the classical two-date gap fill: the other date carries the structure that a
    gap hides, the local fit absorbs the change of season, sensor or light). Several window sides: the mean
    of their fits (small windows follow local change, large ones are steadier).

    Slopes shrink towards the tile's global fit where the reference is flat, and the fit tends to the
    global one where few pixels are shared. Meaningful only where ref_mask is 1.
    """
    windows = (window,) if isinstance(window, int) else tuple(window)
    with torch.autocast(value.device.type, enabled=False):
        value, mask, ref, ref_mask = value.float(), mask.float(), ref.float(), ref_mask.float()
        both = mask * ref_mask
        x, y = ref * both, value * both

        def fit(n, sx, sy, sxx, sxy):
            n = n.clamp_min(1e-6)
            mx, my = sx / n, sy / n
            return n, mx, my, (sxx / n - mx ** 2).clamp_min(0), sxy / n - mx * my

        maps = (both, x, y, x * ref, x * value)
        _, gmx, gmy, gvx, gcxy = fit(*(t.mean((-2, -1), keepdim=True) for t in maps))
        g_slope = gcxy / (gvx + 1e-3)
        overall = gmy + g_slope * (ref - gmx)
        boxes = [_box_means(t, windows) for t in maps]  # per map, per window
        fits = []
        for i, size in enumerate(windows):
            n, mx, my, vx, cxy = fit(*(b[i] for b in boxes))
            slope = (cxy + ridge * g_slope) / (vx + ridge)
            count = n * size * size
            trust = count / (count + min_pixels)
            fits.append(trust * (my + slope * (ref - mx)) + (1 - trust) * overall)
        return sum(fits) / len(fits)


MULTIBAND_BLOCK = 3  # the fit is solved on a grid of 3×3-px blocks and its coefficients interpolated between them
MULTIBAND_WINDOW = 11  # side of its windows, in blocks (33 px)
MULTIBAND_RIDGE = 0.1  # its coefficients' shrinkage towards the window's mean, per known pixel (z-score units)


def multiband_fit(value: torch.Tensor, mask: torch.Tensor, ref: torch.Tensor, ref_mask: torch.Tensor, n_bands: int,
                  min_pixels: float = 24.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each band of the scene predicted from every band of the reference by a ridge regression in a window around
    every pixel: a change of season moves the bands differently (vegetation darkens the red and brightens the near
    infrared), which one band of the other date cannot follow. Fitted on the pixels known in every band of both
    dates; it tends to the tile's own multiband fit where a window holds few of them. The window sums are taken
    over blocks and the small systems solved once a block (the coefficients vary slowly: 1/9 of the work).
    Returns (the fit, where it was fitted) as N·C×1×H×W and N×1×H×W; meaningful where every reference band is
    known."""
    with torch.autocast(value.device.type, enabled=False):
        nc, _, h, w = value.shape
        n, k = nc // n_bands, n_bands + 1
        y = value.float().view(n, n_bands, h, w)
        both = (mask.float().view(n, n_bands, h, w).amin(1, keepdim=True)
                * ref_mask.float().view(n, n_bands, h, w).amin(1, keepdim=True))
        predictors = torch.cat([torch.ones_like(both), ref.float().view(n, n_bands, h, w)], 1)  # N×k×H×W
        rows, cols = torch.triu_indices(k, k)
        maps = torch.cat([predictors[:, rows] * predictors[:, cols] * both,
                          (predictors[:, :, None] * (y * both)[:, None]).flatten(1, 2)], 1)
        del y
        blocks = F.avg_pool2d(maps, MULTIBAND_BLOCK, ceil_mode=True)  # partial blocks at the edges: their mean
        tile = maps.mean((-2, -1), keepdim=True)  # the tile's own sums: the fallback
        del maps
        local = _box_means(blocks, (MULTIBAND_WINDOW,))[0]

        def solve(sums):  # N×m×… window means of the products → N×…×k×C coefficients
            gram = torch.zeros(*sums.shape[:1], *sums.shape[2:], k, k, device=sums.device)
            gram[..., rows, cols] = sums[:, :len(rows)].movedim(1, -1)
            gram[..., cols, rows] = sums[:, :len(rows)].movedim(1, -1)
            gram += (MULTIBAND_RIDGE * sums[:, :1] + 1e-6).movedim(1, -1)[..., None] * torch.eye(k, device=sums.device)
            rhs = sums[:, len(rows):].movedim(1, -1).unflatten(-1, (k, n_bands))
            return torch.linalg.solve(gram, rhs)

        count = local[:, :1] * (MULTIBAND_WINDOW * MULTIBAND_BLOCK) ** 2
        trust = (count / (count + min_pixels)).movedim(1, -1)[..., None]  # N×…×1×1
        coefficients = trust * solve(local) + (1 - trust) * solve(tile)  # N×h'×w'×k×C
        coefficients = F.interpolate(coefficients.flatten(-2).movedim(-1, 1), size=(h, w), mode="bilinear",
                                     align_corners=False).unflatten(1, (k, n_bands))  # N×k×C×H×W
        fit = torch.einsum("nkc...,nk...->nc...", coefficients, predictors)
        return fit.reshape(nc, 1, h, w), both


# the fills the mean moves towards where the reference is known (the regression fill, a local fit plus a biharmonic
# fill of its residual, was one too: it added 0.007 dB on the validation pairs for one more solve a tile; see
# benchmarks/reference_blend_three_fills.json)
REFERENCE_FILLS = ("reference_base", "multiband")


def reference_fills(value, mask, ref, ref_mask, config, harmonic_base: torch.Tensor, n_bands: int,
                    wanted=REFERENCE_FILLS) -> dict[str, torch.Tensor]:
    """The classical two-date fills, by name (those of `wanted`; the reference base always), float32:
    reference_base: a local linear fit on the reference plus a harmonic fill of what it leaves (the residual is
    smoother than the image), the harmonic base where the reference is unknown: the network's input.
    multiband: `multiband_fit` plus a biharmonic fill of its residual, meaningful where the reference is known;
    the reference base where a reference band is unknown."""
    with torch.autocast(value.device.type, enabled=False):
        guide = local_linear_fit(value, mask, ref, ref_mask, config.regression_window)
        both = mask.float() * ref_mask.float()
        residual = harmonic_fill((value.float() - guide) * both, both, config.harmonic_iters)
        fills = {"reference_base": torch.where(ref_mask > 0, guide + residual, harmonic_base.float())}
        del guide, residual
        if "multiband" in wanted:
            fit, fitted = multiband_fit(value, mask, ref, ref_mask, n_bands)
            fitted = fitted.repeat_interleave(n_bands, 0)
            residual = harmonic_fill((value.float() - fit) * fitted, fitted, config.harmonic_iters)
            fit += biharmonic_fill(fitted, residual, config.biharmonic_iters)
            all_known = ref_mask.view(-1, n_bands, *ref_mask.shape[-2:]).amin(1, keepdim=True) > 0
            fills["multiband"] = torch.where(all_known.repeat_interleave(n_bands, 0), fit, fills["reference_base"])
        return fills


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1), nn.GELU())


_fused_conv_gelu = True  # until oneDNN's fused call turns out to be missing from this torch build


def conv_gelu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """GELU(conv(x)). In CPU inference one fused oneDNN call (conv with a GELU post-op): about twice as fast
    as the two, which at full resolution are limited by memory traffic, not arithmetic."""
    global _fused_conv_gelu
    if _fused_conv_gelu and x.device.type == "cpu" and not torch.is_grad_enabled():
        try:
            return torch.ops.mkldnn._convolution_pointwise(
                x, conv.weight.to(x.dtype), conv.bias.to(x.dtype), conv.padding, conv.stride, conv.dilation,
                conv.groups, "gelu", [], "none")
        except (AttributeError, RuntimeError, NotImplementedError):
            _fused_conv_gelu = False
    return F.gelu(conv(x))


def run_block(block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A `_block` (conv, GELU, conv, GELU) applied through `conv_gelu`."""
    return conv_gelu(block[2], conv_gelu(block[0], x))


# Where the taps of a 3×3 kernel on a nearest ×2 upsampled image fall on the image itself, for even and odd output
# rows: [phase, tap of a 2×2 window at the low resolution, tap of the 3×3 kernel (−1, 0, +1)]. Output row 2i sees
# rows i−1, i, i (window i−1…i); output row 2i+1 sees rows i, i, i+1 (window i…i+1).
_PHASE_TAPS = torch.tensor([[[1., 0, 0], [0, 1, 1]],
                            [[1., 1, 0], [0, 0, 1]]])


def up_block(block: nn.Sequential, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """`run_block(block, cat([nearest ×2 upsampling of x, skip]))` without either full-resolution tensor: the first
    convolution's x part runs at x's resolution as one 2×2 kernel per output phase (the pixel of each 2×2 block),
    added into place onto its skip part. The same sums, 4/9 of that part's arithmetic and less memory traffic."""
    conv, cx = block[0], x.shape[1]
    n, _, h, w = x.shape
    taps = _PHASE_TAPS.to(conv.weight)
    phases = torch.einsum("aij,ocjk,blk->oabcil", taps, conv.weight[:, :cx], taps).reshape(-1, cx, 2, 2)
    low = F.conv2d(F.pad(x, (1, 1, 1, 1)), phases).view(n, -1, 2, 2, h + 1, w + 1)
    y = F.conv2d(skip, conv.weight[:, cx:], conv.bias, padding=1)
    pixels = y.view(n, -1, h, 2, w, 2)
    # phase (a, b): output pixels (2i + a, 2j + b), windows starting at low-res (i − 1 + a, j − 1 + b)
    for a in range(2):
        for b in range(2):
            pixels[:, :, :, a, :, b] += low[:, :, a, b, a:a + h, b:b + w]
    return conv_gelu(block[2], F.gelu(y))


def band_mean(x: torch.Tensor, n_bands: int) -> torch.Tensor:
    """(scenes×bands, C, H, W) → (scenes, C, H, W): the mean over each scene's bands, summed slice by slice
    in float32 (a reduction over that axis of a channels-last tensor is 5–10× slower on CPUs)."""
    per_scene = x.view(-1, n_bands, *x.shape[1:])
    total = per_scene[:, 0].to(torch.float32, copy=True)
    for band in range(1, n_bands):
        total += per_scene[:, band]
    return (total / n_bands).to(x.dtype)


class CrossBand(nn.Module):
    """Adds a projection of the mean over a scene's bands to each band's features (DeepSets pooling)."""

    def __init__(self, channels):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, n_bands: int) -> torch.Tensor:
        bh, c, h, w = x.shape
        shared = self.proj(band_mean(x, n_bands))[:, None]
        return (x.view(bh // n_bands, n_bands, c, h, w) + shared).view(bh, c, h, w)  # broadcast, no copies


class ConvCNP(nn.Module):
    """(values, context mask) of shape (scenes×bands, 1, H, W) → (mean, variance) of the same shape."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        n_scales = len(config.setconv_scales)
        self.setconv = SetConv(config.setconv_scales, config.setconv_size)
        enc_in = 3 + 2 * n_scales  # value×mask, mask, per scale a smooth estimate and a density, harmonic base
        if config.reference:
            enc_in += len(REFERENCE_FEATURES)
        ch = config.channels
        self.inp = nn.Conv2d(2 * enc_in, ch[0], 3, padding=1)
        self.down = nn.ModuleList(_block(ch[i], ch[i + 1]) for i in range(len(ch) - 1))
        self.enc0 = _block(ch[0], ch[0])
        self.cross = nn.ModuleList(CrossBand(c) for c in ch)
        self.up = nn.ModuleList(_block(ch[i + 1] + ch[i], ch[i]) for i in range(len(ch) - 1))
        self.head = nn.Conv2d(ch[0], 3 if config.reference else 2, 1)  # mean, std (, reference gate)
        for module in self.modules():  # He init keeps activations alive through the deep UNet (no norm layers,
            if isinstance(module, nn.Conv2d):  # so that tiles of any size give the same answer)
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        with torch.no_grad():  # start near the SetConv estimate with unit std, but let gradients flow
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (the UNet halves them per level)."""
        return 2 ** (len(self.config.channels) - 1)

    def _encode(self, feats: torch.Tensor, n_bands: int) -> torch.Tensor:
        """The input convolution over each band's features and their mean over the scene's bands: the
        latter (half of the input channels) convolved once per scene and added to each band."""
        bh, c, h, w = feats.shape
        weight, half = self.inp.weight, self.inp.weight.shape[1] // 2
        own = F.conv2d(feats, weight[:, :c], self.inp.bias, padding=1)  # c < half: the features left out are 0
        shared = F.conv2d(band_mean(feats, n_bands), weight[:, half:half + c], None, padding=1)
        return (own.view(bh // n_bands, n_bands, -1, h, w) + shared[:, None]).view(bh, -1, h, w)

    def forward(self, value: torch.Tensor, mask: torch.Tensor, n_bands: int,
                ref: torch.Tensor | None = None, ref_mask: torch.Tensor | None = None):
        """ref, ref_mask: another date of the same place (normalised like value) and where it is known;
        None, or a ref_mask of zeros, is the single-image fill."""
        value = value * mask
        smooth = self.setconv(value, mask)
        harmonic = harmonic_fill(value, mask, self.config.harmonic_iters)
        base = harmonic.to(smooth.dtype)
        feats = [value, mask, smooth, base]
        ref_base = base
        # Without a known reference pixel the reference features are all 0: left out, with their weights.
        with_reference = self.config.reference and ref is not None and ref_mask is not None and bool(
            (ref_mask > 0).any())
        if with_reference:
            ref = ref * ref_mask
            fills = reference_fills(value, mask, ref, ref_mask, self.config, base, n_bands,
                                    [name for name in REFERENCE_FILLS if getattr(self.config, f"{name}_weight")])
            ref_base = fills["reference_base"].to(smooth.dtype)  # the float32 fills are kept for the blend
            feats += [ref, ref_mask.to(smooth.dtype), ref_base - base]
        feats = torch.cat(feats, 1)
        reference_known = feats[:, -2:-1] > 0 if with_reference else None
        mask_for_blend = mask if self.config.biharmonic_weight > 0 else None
        del value, mask, smooth, ref, ref_mask  # memory: a tile's features are held in `feats` alone
        x = self._encode(feats, n_bands)
        del feats
        skips = [self.cross[0](run_block(self.enc0, x), n_bands)]
        for i, down in enumerate(self.down):
            x = self.cross[i + 1](run_block(down, F.avg_pool2d(skips[-1], 2)), n_bands)
            skips.append(x)
        x = skips.pop()
        for up in reversed(self.up):
            skip = skips.pop()
            x = up_block(up, x, skip)
        raw = self.head(x)
        del x, skip  # memory: the full-resolution features are not held while the biharmonic fill runs
        raw_mean, raw_std = raw[:, 0], raw[:, 1]
        mean = base[:, 0] + raw_mean  # a learnt correction of the harmonic fill
        if with_reference:  # leaning on the reference's fill as far as the network trusts it
            mean = mean + torch.sigmoid(raw[:, 2]) * (ref_base - base)[:, 0]
            mean = blend_reference_fills(mean, fills, reference_known[:, 0], self.config)
            del fills
        alone = ~reference_known[:, 0] if with_reference else None  # the pixels without a reference
        if self.config.biharmonic_weight > 0 and (alone is None or bool(alone.any())):
            weight = self.config.biharmonic_weight if alone is None else self.config.biharmonic_weight * alone.float()
            smooth_fill = biharmonic_fill(mask_for_blend, harmonic, self.config.biharmonic_iters)[:, 0]
            mean = mean.float() + weight * (smooth_fill - mean.float())
        del harmonic
        std = self.config.min_std + F.softplus(raw_std + 0.5)
        var = (std ** 2)[:, None]
        if with_reference and self.config.reference_variance_scale != 1:
            var = torch.where(reference_known, var * self.config.reference_variance_scale, var)
        return mean[:, None], var


def blend_reference_fills(mean, fills: dict, known, config: ModelConfig):
    """Where the reference is known, the mean moved towards each of the classical two-date `fills` by the config's
    weight for it: the network's gate trusts the reference base more or less than a scene needs (best weights from
    about 0 to 1 on the validation pairs), and the other fills err differently (`adapt.reference_weights`)."""
    weights = {name: getattr(config, f"{name}_weight") for name in fills}
    if not any(weights.values()):
        return mean
    mean = mean.float()
    shift = sum(weight * (fills[name][:, 0] - mean) for name, weight in weights.items() if weight)
    return mean + known.float() * shift


def gaussian_nll(mean, var, truth, weight, beta: float = 0.0):
    """Mean Gaussian NLL over the weighted pixels. beta > 0 gives the beta-NLL of Seitzer et al. (2022):
    each pixel's loss is scaled by its (detached) variance**beta, so that the mean keeps learning
    where the predicted variance is large instead of being drowned by it."""
    nll = 0.5 * (torch.log(2 * math.pi * var) + (truth - mean) ** 2 / var)
    if beta:
        nll = nll * var.detach() ** beta
    return (nll * weight).sum() / weight.sum().clamp_min(1)


def save_model(model: ConvCNP, path: Path, info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": asdict(model.config), "state": model.state_dict(), "info": info}, path)


def load_model(path: Path | None = None, device: str | torch.device = "cpu") -> ConvCNP:
    """Load the shipped (or a given) checkpoint; needs no network."""
    path = Path(path or WEIGHTS)
    if not path.exists():
        raise FileNotFoundError(f"{path}: ConvCNP weights not found; train them with `napari-convnp train`")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()}
    model = ConvCNP(ModelConfig(**cfg))
    model.load_state_dict(ckpt["state"])
    model.info = ckpt.get("info", {})
    # channels_last: oneDNN's convolutions on the CPU run ~1.3x faster in it (and cuDNN's do not mind)
    return model.to(device, memory_format=torch.channels_last).eval()
