"""Test-time adaptation: the scene as its own task.

Before filling, a copy of the model is fine-tuned on the scene itself: known pixels are hidden with the
scene's own gap geometry, moved onto known ground, and the copy learns to predict them. What it learns
(this scene's textures, sensor, season) then serves the real gaps. Off by default: it costs about a
second a step on a 2-core CPU. The same tasks, without training, calibrate the variance where another date is
known (`reference_variance_factor`, on by default).
"""
from __future__ import annotations

import copy

import numpy as np

from . import masks
from .inpaint import Cancelled, _autocast

DEFAULT_STEPS = 60  # PROBES.md: 60 steps gave +0.09-0.10 dB on STS-CNN; see benchmarks/adaptation.json
TILE = 128
BATCH = 4  # tiles a step
LEARNING_RATE = 3e-4


def adapt_model(model, bands, offsets, scales, context, gaps, steps: int, *, reference=None, seed: int = 0,
                device: str = "cpu", precision: str = "float32", progress=None, cancelled=None):
    """A copy of `model` fine-tuned for `steps` Adam steps on tasks cut from this scene.

    bands: C×H×W in the input's units, normalised with (offsets, scales) as the fill does; context:
    the known pixels the fill may use; gaps: the pixels to fill, whose geometry is reused to hide known
    ones; reference: None or (normalised reference, where known). progress(step, steps) after each step.
    """
    import torch

    from .model import gaussian_nll

    c, h, w = bands.shape
    tile = _task_side(model, h, w)
    if steps <= 0 or tile < 2 * model.multiple:
        return model  # too small a scene to cut tasks from
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    tuned = copy.deepcopy(model).train()
    opt = torch.optim.Adam(tuned.parameters(), lr=LEARNING_RATE)
    norm = (offsets[:, None, None], scales[:, None, None])
    for step in range(steps):
        if cancelled and cancelled():
            raise Cancelled()
        tensors = _batch(BATCH, device, rng, bands, norm, context, gaps, reference, tile)
        values, task_context, target = tensors[:3]
        with _autocast(device, precision):
            mean, var = tuned(values, task_context, c, *tensors[3:])
        loss = gaussian_nll(mean.float(), var.float(), values, target, beta=1.0)
        opt.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tuned.parameters(), 1.0)
            opt.step()
        if progress:
            progress(step + 1, steps)
    return tuned.eval()


def _task_side(model, h: int, w: int) -> int:
    """The side of the tasks cut from an h×w scene: TILE, or the largest multiple of the UNet's that fits."""
    return min(TILE, h // model.multiple * model.multiple, w // model.multiple * model.multiple)


def _batch(count: int, device: str, *task_args) -> list:
    """`count` tasks (`_task`'s arguments) stacked as the model takes them: values, context, target (and the
    reference, where it is known), each N·C×1×T×T on `device`."""
    import torch

    tasks = [_task(*task_args) for _ in range(count)]
    return [torch.from_numpy(np.concatenate(parts))[:, None].to(device) for parts in zip(*tasks)]


def _task(rng, bands, norm, context, gaps, reference, tile):
    """A tile of known ground with a tile's worth of the scene's own gaps (from elsewhere) hidden."""
    _, h, w = bands.shape
    for _ in range(20):
        r, col = rng.integers(0, h - tile + 1), rng.integers(0, w - tile + 1)
        window = (slice(None), slice(r, r + tile), slice(col, col + tile))
        known = context[window]
        if known.mean() > 0.6:
            break
    hidden = None
    for _ in range(10):  # the scene's own gap geometry, rolled across the rows onto known ground
        r2, c2 = rng.integers(0, h - tile + 1), rng.integers(0, w - tile + 1)
        candidate = np.roll(gaps[:, r2:r2 + tile, c2:c2 + tile], rng.integers(tile // 8, tile - tile // 8), axis=1)
        if 0.02 < candidate.mean() < 0.6 and (known & candidate).any():
            hidden = candidate
            break
    if hidden is None:  # a scene with few gaps (a painted cloud): simulated stripes instead
        hidden = np.broadcast_to(masks.simulate_slc_off((tile, tile), seed=int(rng.integers(2**31))), known.shape)
    task_context = known & ~hidden
    target = known & hidden
    values = np.where(known, (bands[window] - norm[0]) / norm[1], 0).astype(np.float32)
    parts = [values, task_context.astype(np.float32), target.astype(np.float32)]
    if reference is not None:
        parts += [part[window].astype(np.float32) for part in reference]
    return parts


CALIBRATION_TASKS = (2, 16)  # 128² tiles, an eighth of the scene's area within these bounds: about 2-12 % more work


def reference_variance_factor(model, bands, offsets, scales, context, gaps, reference, *, seed: int = 0,
                              device: str = "cpu", precision: str = "float32") -> float:
    """How much wider (> 1) or narrower the variance must be where the reference is known for this scene's 95 %
    intervals to hold. How far another date can be trusted differs from scene to scene (eight days or a season
    apart, a flood between), more than one constant fitted on the validation pairs can say. The model fills
    known pixels hidden with the scene's own gap geometry (the tasks adaptation trains on); the factor is
    (95th percentile of |error| / std, over those where the reference is known, / 1.96)², kept in [1/4, 8];
    1 where too few such pixels are found."""
    import torch

    c, h, w = bands.shape
    tile = _task_side(model, h, w)
    if tile < 2 * model.multiple:
        return 1.0
    rng = np.random.default_rng(seed)
    norm = (offsets[:, None, None], scales[:, None, None])
    count = int(np.clip(round(h * w / tile ** 2 / 8), *CALIBRATION_TASKS))
    values, task_context, target, ref, ref_known = _batch(count, device, rng, bands, norm, context, gaps, reference,
                                                          tile)
    with torch.inference_mode(), _autocast(device, precision):
        mean, var = model(values, task_context, c, ref, ref_known)
    scored = (target > 0) & (ref_known > 0)
    if int(scored.sum()) < 500:
        return 1.0
    z = ((values - mean.float()).abs() / var.float().sqrt())[scored]
    q95 = float(np.quantile(z.cpu().numpy(), 0.95))
    return float(np.clip((q95 / 1.96) ** 2, 0.25, 8.0))


def with_reference_variance(model, factor: float):
    """The model (the same weights, not copied) with its variance where the reference is known `factor` times
    wider."""
    import dataclasses

    scaled = copy.copy(model)
    scaled.config = dataclasses.replace(model.config,
                                        reference_variance_scale=model.config.reference_variance_scale * factor)
    return scaled
