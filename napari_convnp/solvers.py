"""The classical solvers on the GPU or CPU through torch, the ground floor under the network's features and the
classical baselines alike: harmonic (red-black SOR) and biharmonic (conjugate gradients) fills, and the local linear
fits of one date to another (per band, and across bands).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


def box_means(x: torch.Tensor, sizes: tuple[int, ...]) -> list[torch.Tensor]:
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
        total = 0
        for size in windows:  # one window at a time: a whole scene's row block holds 5 maps, not 5 per window
            n, mx, my, vx, cxy = fit(*(box_means(t, (size,))[0] for t in maps))  # the same sums, zero padded
            slope = (cxy + ridge * g_slope) / (vx + ridge)
            count = n * size * size
            trust = count / (count + min_pixels)
            total = total + (trust * (my + slope * (ref - mx)) + (1 - trust) * overall)
        return total / len(windows)


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
        local = box_means(blocks, (MULTIBAND_WINDOW,))[0]

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
