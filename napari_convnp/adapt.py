"""Test-time adaptation: the scene as its own task.

Before filling, a copy of the model is fine-tuned on the scene itself: known pixels are hidden with the
scene's own gap geometry, moved onto known ground, and the copy learns to predict them. What it learns
(this scene's textures, sensor, season) then serves the real gaps. Off by default: it costs about a
second a step on a 2-core CPU. The same tasks, without training, choose how far the mean leans on the biharmonic
fill and calibrate the variance where another date is known (`calibration.scene_calibration`, on by default).
"""
from __future__ import annotations

import copy

import numpy as np

from .errors import Cancelled
from .tasks import task_batch, task_side
from .tiling import autocast

DEFAULT_STEPS = 60  # PROBES.md: 60 steps gave +0.09-0.10 dB on STS-CNN; see benchmarks/adaptation.json
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
    tile = task_side(model, h, w)
    if steps <= 0 or not can_adapt(model, h, w):
        return model  # too small a scene to cut tasks from
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    tuned = copy.deepcopy(model).train()
    opt = torch.optim.Adam(tuned.parameters(), lr=LEARNING_RATE)
    norm = (offsets[:, None, None], scales[:, None, None])
    for step in range(steps):
        if cancelled and cancelled():
            raise Cancelled()
        tensors = task_batch(BATCH, device, rng, bands, norm, context, gaps, reference, tile)
        values, task_context, target = tensors[:3]
        with autocast(device, precision):
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


def can_adapt(model, h: int, w: int) -> bool:
    """Whether tasks can be cut from an h×w scene (each at least two of the UNet's multiples a side)."""
    return task_side(model, h, w) >= 2 * model.multiple
