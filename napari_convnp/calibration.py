"""The per-scene calibration: what the scene's own known pixels, hidden with its gap geometry, say about the fill
(how far the mean leans on the biharmonic fill, how far towards the classical two-date fills, how wide the variance
must be where a reference is known), and the model with those choices applied.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools

import numpy as np

from .errors import Cancelled
from .tasks import task_batch, task_side
from .tiling import autocast

CALIBRATION_TASKS = (8, 32)  # 128² tiles, an eighth of the scene's area within these bounds
MIN_SCORED = 500  # hidden pixels a calibration needs; below, the defaults hold
TASKS_A_PASS = 8  # 128² tasks run through the network at once (all bands): 8 hold no more than a 512² tile


def scene_calibration(model, bands, offsets, scales, context, gaps, reference=None, *, seed: int = 0,
                      device: str = "cpu", precision: str = "float32", choose_blend: bool = True,
                      progress=None, cancelled=None) -> dict:
    """What this scene's own known pixels, hidden with its gap geometry (the tasks adaptation trains on), say
    about the fill; returns the keyword arguments of `calibrated`:

    biharmonic_weight: how far the mean leans on the biharmonic fill where no reference is known. The two err
    differently; which blend is best differs from scene to scene (from below 0 to above 1 on the validation
    scenes), with texture and noise: see `blend_weight`.
    reference_base_weight, multiband_weight (with a reference): how far the mean moves towards each classical
    two-date fill where the reference is known (`model.blend_reference_fills`; `reference_weights`).
    reference_variance_factor (with a reference): how much wider (> 1) or narrower the variance must be where
    the reference is known for the 95 % intervals to hold: how far another date can be trusted differs from
    scene to scene (eight days or a season apart, a flood between), more than one constant fitted on the
    validation pairs can say. (95th percentile of |error| / std there / 1.96)², kept in [1/4, 8]; 1 where too
    few such pixels are found. choose_blend=False keeps the model's biharmonic weight (one the user fixed).
    progress(tasks done, tasks) after each pass (a whole scene's calibration takes minutes on a CPU); cancelled()
    is asked before each pass, and Cancelled raised when it says True."""
    import torch

    from .model import REFERENCE_FILLS, reference_fills
    from .solvers import biharmonic_fill, harmonic_fill

    c, h, w = bands.shape
    config = model.config
    found = {"biharmonic_weight": config.biharmonic_weight}
    names = [f"{name}_weight" for name in REFERENCE_FILLS]
    if reference is not None:
        found.update(reference_variance_factor=1.0, **{name: getattr(config, name) for name in names})
    tile = task_side(model, h, w)
    if tile < 2 * model.multiple:
        return found
    rng = np.random.default_rng(seed)
    norm = (offsets[:, None, None], scales[:, None, None])
    count = int(np.clip(round(h * w / tile ** 2 / 8), *CALIBRATION_TASKS))
    # the tasks made as they are used, a pass at a time (the same ones as all at once)
    chunks = (task_batch(min(TASKS_A_PASS, count - i), device, rng, bands, norm, context, gaps, reference, tile)
              for i in range(0, count, TASKS_A_PASS))
    # the network's own mean, to weigh against the other fills
    network = calibrated(model, biharmonic_weight=0.0, **{name: 0.0 for name in names})
    blend = choose_blend and config.biharmonic_weight > 0
    alone_errors, biharmonic_errors = [], []  # only the scored pixels' are kept (memory)
    scored_parts = []  # with a reference, where it is known: (network error, towards each fill, std)
    with torch.inference_mode():
        if progress:
            progress(0, count)
        for done, (values, known, target, *ref) in enumerate(chunks, 1):  # a few tasks a pass: a tile's memory
            if cancelled and cancelled():
                raise Cancelled()
            with autocast(device, precision):
                mean, var = (t.float() for t in network(values, known, c, *ref))
            harmonic = harmonic_fill(values * known, known, config.harmonic_iters)
            if blend:
                smooth = biharmonic_fill(known, harmonic, config.biharmonic_iters)
                alone = (target > 0) & (ref[1] == 0) if ref else target > 0
                alone_errors.append((mean - values)[alone])
                biharmonic_errors.append((smooth - values)[alone])
            if ref:
                scored = (target > 0) & (ref[1] > 0)
                fills = reference_fills(values * known, known, ref[0] * ref[1], ref[1], config, harmonic, c)
                scored_parts.append([(mean - values)[scored], *((fills[f] - mean)[scored] for f in REFERENCE_FILLS),
                                     var.sqrt()[scored]])
            if progress:
                progress(min(done * TASKS_A_PASS, count), count)
    if blend:
        found["biharmonic_weight"] = blend_weight(config.biharmonic_weight, torch.cat(alone_errors),
                                                  torch.cat(biharmonic_errors))
    if reference is not None and sum(len(p[0]) for p in scored_parts) >= MIN_SCORED:
        error, *towards, std = (torch.cat(parts) for parts in zip(*scored_parts))
        weights = reference_weights([getattr(config, name) for name in names], error, towards)
        found.update(zip(names, weights))
        error = error + sum(w * t for w, t in zip(weights, towards))  # the errors of the blended mean
        q95 = float(np.quantile((error.abs() / std).cpu().numpy(), 0.95))
        found["reference_variance_factor"] = float(np.clip((q95 / 1.96) ** 2, 0.25, 8.0))
    return found


BLEND_MAX = 0.6  # the most weight the biharmonic fill gets; the network's mean keeps the larger share
BLEND_TRUST = 0.5  # the share of the scene's own estimate in the weight, against the checkpoint's


def blend_weight(prior: float, network_error, biharmonic_error) -> float:
    """The weight w minimising the squared error of (1 - w)·network + w·biharmonic on the hidden pixels, taken
    halfway to `prior` (a few tiles of hidden pixels give a noisy estimate) and kept in [0, BLEND_MAX]. The rule
    was chosen on the validation scenes: +0.083 dB over the network alone there, against +0.075 dB for the best
    fixed weight (benchmarks/biharmonic_blend.json)."""
    if network_error.numel() < MIN_SCORED:
        return prior
    diff = network_error - biharmonic_error
    own = float((network_error * diff).sum() / (diff * diff).sum().clamp_min(1e-12))
    return float(np.clip(BLEND_TRUST * own + (1 - BLEND_TRUST) * prior, 0.0, BLEND_MAX))


REFERENCE_BLEND_MAX = 1.0  # the most either reference fill gets: the mean is that fill where the reference is known
REFERENCE_TRUST = 0.75  # the share of the scene's own estimate in the weights, against the priors (chosen on val)


def reference_weights(priors, error, towards) -> tuple[float, ...]:
    """The weights a in [0, REFERENCE_BLEND_MAX] minimising the squared error of error + Σ a_i·towards_i (the
    network's mean moved towards other fills) on the hidden pixels, taken REFERENCE_TRUST of the way from the
    `priors`. The fills are alike (two fits on the same reference), so the free least-squares weights can be large
    and of opposite signs: the box is part of the fit, not a clip after it."""
    d = np.stack([t.double().cpu().numpy() for t in towards])
    own = box_least_squares(d @ d.T, -(d @ error.double().cpu().numpy()), REFERENCE_BLEND_MAX)
    return tuple(float(np.clip(REFERENCE_TRUST * o + (1 - REFERENCE_TRUST) * p, 0.0, REFERENCE_BLEND_MAX))
                 for o, p in zip(own, priors))


def box_least_squares(gram: np.ndarray, rhs: np.ndarray, high: float) -> np.ndarray:
    """argmin over w in [0, high]^n of w·gram·w − 2·rhs·w, for a few weights: every face of the box (each weight
    free, at 0 or at `high`) solved, the best kept."""
    n = len(rhs)
    best, best_value = np.zeros(n), 0.0
    for states in itertools.product(("free", 0.0, high), repeat=n):
        w = np.array([0.0 if s == "free" else s for s in states])
        free = [i for i, s in enumerate(states) if s == "free"]
        if free:
            fixed = [i for i in range(n) if i not in free]
            sub = gram[np.ix_(free, free)] + 1e-12 * np.trace(gram) * np.eye(len(free))
            w[free] = np.linalg.solve(sub, rhs[free] - gram[np.ix_(free, fixed)] @ w[fixed])
            if (w[free] < 0).any() or (w[free] > high).any():
                continue
        value = w @ gram @ w - 2 * rhs @ w
        if value < best_value:
            best, best_value = w, value
    return best


def calibrated(model, reference_variance_factor: float = 1.0, **weights):
    """The model (the same weights, not copied) with the scene's blend weights (biharmonic_weight and the
    reference fills' weights: those given replace the model's) and its variance where the reference is known
    `reference_variance_factor` times wider."""
    scaled = copy.copy(model)
    scaled.config = dataclasses.replace(
        model.config, reference_variance_scale=model.config.reference_variance_scale * reference_variance_factor,
        **{name: weight for name, weight in weights.items() if weight is not None})
    return scaled
