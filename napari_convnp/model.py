"""The on-grid ConvCNP: a SetConv encoder with a density channel, a UNet, a Gaussian head.

Band-agnostic: every band runs through the same network as its own single-band image, and a
cross-band path (the mean over a scene's bands of each band's features, a DeepSets pooling) lets a
band use pixels that are known in other bands. Works for any band count.
"""
from __future__ import annotations

import json
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
    offsets = np.zeros(len(bands), np.float32)
    scales = np.ones(len(bands), np.float32)
    for b, (band, ok) in enumerate(zip(bands, known)):
        values = band[ok]
        if values.size:
            offsets[b] = values.mean(dtype=np.float64)
            scales[b] = max(values.std(dtype=np.float64), 1e-6 * max(abs(offsets[b]), 1.0), 1e-12)
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
    regression_window: int = 31  # side of the local linear fit of the scene on the reference (probes: 31 px best)
    reference_variance_scale: float = 1.0  # calibration of the variance where a reference is known (fitted on val)


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
        """(scales, 1, 1, size): a Gaussian is separable, so rows then columns cost 2·size, not size²."""
        r = torch.arange(self.size, dtype=torch.float32, device=self.log_scale.device) - self.size // 2
        k = torch.exp(-0.5 * r[None] ** 2 / torch.exp(self.log_scale)[:, None] ** 2)
        return k[:, None, None]  # positive by construction

    def forward(self, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        k = self.kernel_1d().to(value.dtype)
        pad = self.size // 2
        both = torch.cat([value * mask, mask], 0)  # one conv call for signal and density
        rows = F.conv2d(F.pad(both, (pad, pad, 0, 0)), k)
        out = F.conv2d(F.pad(rows, (0, 0, pad, pad)), k.transpose(2, 3), groups=k.shape[0])
        signal, density = out.chunk(2, 0)
        return torch.cat([signal / density.clamp_min(1e-4), torch.log1p(density)], 1)


REFERENCE_FEATURES = ("reference value", "reference known", "reference fill minus harmonic fill")
_NEIGHBOURS = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])[None, None]
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
        kernel = _NEIGHBOURS.to(value.device)
        free = 1 - mask
        x = value * mask + free * x
        parity = (torch.arange(h, device=value.device)[:, None] + torch.arange(w, device=value.device)) % 2
        colours = [free * (parity == p) for p in (0, 1)]
        for _ in range(sweeps):
            for colour in colours:
                neighbours = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
                x = x + SOR_OMEGA * colour * (neighbours - x)
        return x


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a size×size window (zero padded), as two 1-D passes."""
    pad = size // 2
    x = F.avg_pool2d(x, (size, 1), stride=1, padding=(pad, 0), count_include_pad=True)
    return F.avg_pool2d(x, (1, size), stride=1, padding=(0, pad), count_include_pad=True)


def local_linear_fit(value: torch.Tensor, mask: torch.Tensor, ref: torch.Tensor, ref_mask: torch.Tensor,
                     window: int, min_pixels: float = 24.0, ridge: float = 0.05) -> torch.Tensor:
    """The scene predicted from the reference by a linear fit in a window around every pixel, over the
    pixels known in both (the classical two-date gap fill: the other date carries the structure that a
    gap hides, the local fit absorbs the change of season, sensor or light).

    Slopes shrink towards the tile's global fit where the reference is flat, and the fit tends to the
    global one where few pixels are shared. Meaningful only where ref_mask is 1.
    """
    with torch.autocast(value.device.type, enabled=False):
        value, mask, ref, ref_mask = value.float(), mask.float(), ref.float(), ref_mask.float()
        both = mask * ref_mask
        x, y = ref * both, value * both

        def fit(mean):
            n = mean(both).clamp_min(1e-6)
            mx, my = mean(x) / n, mean(y) / n
            vx = (mean(x * ref) / n - mx ** 2).clamp_min(0)
            cxy = mean(x * value) / n - mx * my
            return n, mx, my, vx, cxy

        _, gmx, gmy, gvx, gcxy = fit(lambda t: t.mean((-2, -1), keepdim=True))
        g_slope = gcxy / (gvx + 1e-3)
        n, mx, my, vx, cxy = fit(lambda t: _box_mean(t, window))
        slope = (cxy + ridge * g_slope) / (vx + ridge)
        count = n * window * window
        trust = count / (count + min_pixels)
        local = my + slope * (ref - mx)
        overall = gmy + g_slope * (ref - gmx)
        return trust * local + (1 - trust) * overall


def reference_base(value, mask, ref, ref_mask, window: int, sweeps: int, harmonic_base: torch.Tensor):
    """Local linear fit on the reference plus a harmonic fill of what it leaves (the residual is smoother
    than the image); the harmonic base where the reference is unknown."""
    with torch.autocast(value.device.type, enabled=False):
        guide = local_linear_fit(value, mask, ref, ref_mask, window)
        both = mask.float() * ref_mask.float()
        residual = harmonic_fill((value.float() - guide) * both, both, sweeps)
        return torch.where(ref_mask > 0, guide + residual, harmonic_base.float())


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1), nn.GELU())


class CrossBand(nn.Module):
    """Adds a projection of the mean over a scene's bands to each band's features (DeepSets pooling)."""

    def __init__(self, channels):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, n_bands: int) -> torch.Tensor:
        bh, c, h, w = x.shape
        pooled = x.view(bh // n_bands, n_bands, c, h, w).mean(1)
        return x + self.proj(pooled).repeat_interleave(n_bands, 0)


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

    def forward(self, value: torch.Tensor, mask: torch.Tensor, n_bands: int,
                ref: torch.Tensor | None = None, ref_mask: torch.Tensor | None = None):
        """ref, ref_mask: another date of the same place (normalised like value) and where it is known;
        None, or a ref_mask of zeros, is the single-image fill."""
        value = value * mask
        smooth = self.setconv(value, mask)
        base = harmonic_fill(value, mask, self.config.harmonic_iters).to(smooth.dtype)
        feats = [value, mask, smooth, base]
        ref_base = base
        if self.config.reference:
            if ref is None or ref_mask is None:
                ref, ref_mask = torch.zeros_like(value), torch.zeros_like(mask)
            ref = ref * ref_mask
            if bool((ref_mask > 0).any()):
                ref_base = reference_base(value, mask, ref, ref_mask, self.config.regression_window,
                                          self.config.harmonic_iters, base).to(smooth.dtype)
            feats += [ref, ref_mask.to(smooth.dtype), ref_base - base]
        feats = torch.cat(feats, 1)
        bh, c, h, w = feats.shape
        band_mean = feats.view(bh // n_bands, n_bands, c, h, w).mean(1).repeat_interleave(n_bands, 0)
        x = self.enc0(self.inp(torch.cat([feats, band_mean], 1)))
        skips = [self.cross[0](x, n_bands)]
        for i, down in enumerate(self.down):
            x = self.cross[i + 1](down(F.avg_pool2d(skips[-1], 2)), n_bands)
            skips.append(x)
        x = skips.pop()
        for up in reversed(self.up):
            skip = skips.pop()
            x = up(torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skip], 1))
        raw = self.head(x)
        raw_mean, raw_std = raw[:, 0], raw[:, 1]
        mean = base[:, 0] + raw_mean  # a learnt correction of the harmonic fill
        if self.config.reference:  # leaning on the reference's fill as far as the network trusts it
            mean = mean + torch.sigmoid(raw[:, 2]) * (ref_base - base)[:, 0]
        std = self.config.min_std + F.softplus(raw_std + 0.5)
        var = (std ** 2)[:, None]
        if self.config.reference and self.config.reference_variance_scale != 1:
            var = torch.where(feats[:, -2:-1] > 0, var * self.config.reference_variance_scale, var)
        return mean[:, None], var


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


def describe(model: ConvCNP) -> str:
    params = sum(p.numel() for p in model.parameters())
    return json.dumps({"parameters": params, **asdict(model.config)})
