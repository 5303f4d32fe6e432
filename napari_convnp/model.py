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

from .cpu_kernels import run_block, up_block
from .solvers import biharmonic_fill, harmonic_fill, local_linear_fit, multiband_fit

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
    # `calibration.scene_calibration`; 0 = the network's mean alone), and the conjugate-gradient steps of that fill
    biharmonic_weight: float = 0.0
    biharmonic_iters: int = 50
    # where the reference is known, the mean moved towards the reference base and the multiband fill
    # (`reference_fills`) by these weights (chosen per scene by `calibration.scene_calibration`; 0 = the network's mean)
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

    def unet(self, parts: list[torch.Tensor], n_bands: int) -> torch.Tensor:
        """The encoder's features (`parts`, concatenated along channels) → the head's raw outputs: the network's
        convolutions, most of a tile's time. `parts` is emptied once concatenated, so that the caller holds no
        full-resolution features while the UNet runs (a tile's memory peak)."""
        feats = torch.cat(parts, 1)
        parts.clear()
        x = self._encode(feats, n_bands)
        del feats
        skips = [self.cross[0](run_block(self.enc0, x), n_bands)]
        for i, down in enumerate(self.down):
            x = self.cross[i + 1](run_block(down, F.avg_pool2d(skips[-1], 2)), n_bands)
            skips.append(x)
        x = skips.pop()
        for up in reversed(self.up):
            x = up_block(up, x, skips.pop())
        return self.head(x)  # the full-resolution features are freed on return, before the biharmonic fill

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
        reference_known = ref_mask > 0 if with_reference else None
        mask_for_blend = mask if self.config.biharmonic_weight > 0 else None
        del value, mask, smooth, ref, ref_mask  # memory: a tile's features are held in `feats` alone
        raw = self.unet(feats, n_bands)
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
    about 0 to 1 on the validation pairs), and the other fills err differently (`calibration.reference_weights`)."""
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
