"""The scene as its own task: tiles of known ground with the scene's own gap geometry hidden on them, for
test-time adaptation (`adapt`, which trains on them) and the per-scene calibration (`calibration`, which scores on
them without training).
"""
from __future__ import annotations

import numpy as np

from . import masks

TILE = 128


def task_side(model, h: int, w: int) -> int:
    """The side of the tasks cut from an h×w scene: TILE, or the largest multiple of the UNet's that fits."""
    return min(TILE, h // model.multiple * model.multiple, w // model.multiple * model.multiple)


def task_batch(count: int, device: str, *task_args) -> list:
    """`count` tasks (`_task`'s arguments) stacked as the model takes them: values, context, target (and the
    reference, where it is known), each N·C×1×T×T on `device`."""
    import torch

    tasks = [scene_task(*task_args) for _ in range(count)]
    return [torch.from_numpy(np.concatenate(parts))[:, None].to(device) for parts in zip(*tasks)]


def scene_task(rng, bands, norm, context, gaps, reference, tile):
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
