"""Meta-training the ConvCNP on tiles of real Landsat scenes.

Every tile is a task: a random mask (simulated SLC-off stripes, real gap geometry, random pixels,
blocks; sometimes different per band) hides pixels, a random context density thins the rest, and
the model is trained to predict the hidden pixels with a Gaussian (negative log-likelihood).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import masks
from .model import ConvCNP, ModelConfig, load_model, normalise, save_model
from .scene import SceneError, read_scene

TILE = 128
MAX_BANDS = 6
BETA = 1.0  # beta-NLL weighting: 1 gives the mean the gradient of an MSE while the variance still
# converges to the squared error (Seitzer et al. 2022); validation NLL is the plain one
MAX_SIDE = 1024  # larger training scenes are cut into pieces of at most this size (bounds the cache)


def load_images(folder: Path) -> list[np.ndarray]:
    """All scenes of a folder, normalised per band, nodata as NaN, cut to at most MAX_SIDE squared."""
    images = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff")):
        try:
            scene = read_scene(path)
        except SceneError as err:
            print(f"skipping {err}")
            continue
        normed, _, _ = normalise(scene.bands, ~scene.nodata)
        normed[scene.nodata] = np.nan
        _, h, w = normed.shape
        for r in range(0, h, MAX_SIDE):
            for c in range(0, w, MAX_SIDE):
                piece = normed[:, r:r + MAX_SIDE, c:c + MAX_SIDE]
                if min(piece.shape[1:]) >= TILE and np.isfinite(piece).mean() > 0.5:
                    images.append(np.ascontiguousarray(piece))
    if not images:
        raise SceneError(f"{folder}: no usable training scenes")
    return images


def load_gap_sources(folder: Path) -> list[tuple[np.ndarray, float]]:
    """Real SLC-off gap geometry (mask, pixel size) detected in the scenes of `folder`."""
    sources = []
    if not folder.is_dir():
        return sources
    for path in sorted(folder.glob("*.tif")):
        if "gapmask" in path.name:
            continue
        scene = read_scene(path)
        gaps = masks.detect_gaps(scene.bands, scene.nodata, pixel_size=scene.pixel_size,
                                 zero_is_ambiguous=masks.scene_zero_is_ambiguous(scene.nodata_value, scene.source_dtype))
        if gaps.any():
            sources.append((gaps[0], masks.pixel_metres(scene.pixel_size)))
    return sources


class TaskSampler:
    """Draws gap-filling tasks (values, known, context, target) from real images; seeded."""

    def __init__(self, images, gap_sources, tile=TILE, max_bands=MAX_BANDS, seed=0):
        self.images, self.gap_sources, self.tile, self.max_bands = images, gap_sources, tile, max_bands
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int):
        rng = self.rng
        n_bands = int(rng.choice(np.arange(1, self.max_bands + 1), p=self._band_weights()))
        pool = [im for im in self.images if len(im) >= n_bands]
        tasks = [self.task(pool[rng.integers(len(pool))], n_bands) for _ in range(size)]
        stacked = [torch.from_numpy(np.concatenate(parts))[:, None] for parts in zip(*tasks)]
        return (*stacked, n_bands)

    def _band_weights(self):
        w = np.array([3, 2, 3, 2, 1, 1][: self.max_bands], float)
        return w / w.sum()

    def task(self, image: np.ndarray, n_bands: int):
        rng, t = self.rng, self.tile
        for _ in range(20):
            r = rng.integers(0, image.shape[1] - t + 1)
            c = rng.integers(0, image.shape[2] - t + 1)
            bands = rng.choice(len(image), n_bands, replace=False)
            values = image[bands, r:r + t, c:c + t]
            if np.isfinite(values).mean() > 0.8:
                break
        values = values.astype(np.float32)
        if rng.random() < 0.5:
            values = values[:, :, ::-1]
        if rng.random() < 0.5:
            values = values[:, ::-1]
        # Re-normalise with a random offset and scale so the model does not rely on exact z-scores.
        values = values * math.exp(rng.normal(0, 0.3)) + rng.normal(0, 0.3)
        known = np.isfinite(values)
        values = np.nan_to_num(values)
        hidden = self.mask(n_bands)
        density = 1.0 if rng.random() < 0.7 else rng.uniform(0.05, 1.0)
        context = known & ~hidden & (rng.random(values.shape) < density)
        target = known & ~context
        return values, known.astype(np.float32), context.astype(np.float32), target.astype(np.float32)

    def mask(self, n_bands: int) -> np.ndarray:
        """A C×T×T mask of hidden pixels, of a randomly chosen kind."""
        rng, shape = self.rng, (self.tile, self.tile)
        seed = int(rng.integers(2**31))
        kind = rng.choice(["slc", "real", "pixels", "blocks"], p=[0.5, 0.3, 0.1, 0.1])
        if kind == "real" and not self.gap_sources:
            kind = "slc"
        if kind == "slc":
            base = masks.simulate_slc_off(shape, seed=seed, pixel_size=rng.uniform(20, 60),
                                          angle_deg=rng.uniform(4, 14))
        elif kind == "real":
            src, res = self.gap_sources[rng.integers(len(self.gap_sources))]
            base = masks.transplant_gaps(shape, src, seed=seed, source_pixel_size=res,
                                         pixel_size=res * rng.uniform(0.7, 1.5) if res < 100 else 30.0)
        elif kind == "pixels":
            base = rng.random(shape) < rng.uniform(0.1, 0.9)
        else:
            base = np.zeros(shape, bool)
            for _ in range(rng.integers(1, 6)):
                h, w = rng.integers(4, 40, size=2)
                r, c = rng.integers(0, self.tile - h), rng.integers(0, self.tile - w)
                base[r:r + h, c:c + w] = True
        hidden = np.repeat(base[None], n_bands, 0)
        if n_bands > 1 and rng.random() < 0.3:  # per-band differences, as real bands have
            for b in range(n_bands):
                if rng.random() < 0.5:
                    hidden[b] = np.roll(base, rng.integers(-3, 4), axis=int(rng.integers(2)))
                else:
                    hidden[b] |= rng.random(shape) < rng.uniform(0, 0.3)
        return hidden


def gaussian_nll(mean, var, truth, weight, beta: float = 0.0):
    """Mean Gaussian NLL over the weighted pixels. beta > 0 gives the beta-NLL of Seitzer et al. (2022):
    each pixel's loss is scaled by its (detached) variance**beta, so that the mean keeps learning
    where the predicted variance is large instead of being drowned by it."""
    nll = 0.5 * (torch.log(2 * math.pi * var) + (truth - mean) ** 2 / var)
    if beta:
        nll = nll * var.detach() ** beta
    return (nll * weight).sum() / weight.sum().clamp_min(1)


def validation_tasks(images, gap_sources, count=48, seed=1234):
    """A fixed, seeded set of tasks on the validation scenes, for model selection."""
    sampler = TaskSampler(images, gap_sources, seed=seed)
    batches = []
    for _ in range(count // 8):
        batches.append(sampler.batch(8))
    return batches


@torch.no_grad()
def evaluate(model, batches, device):
    """Gap RMSE and NLL (normalised units) over validation batches."""
    model.eval()
    se = nll = n = 0.0
    for values, known, context, target, n_bands in batches:
        values, context, target = values.to(device), context.to(device), target.to(device)
        mean, var = model(values, context, n_bands)
        se += (((mean - values) ** 2) * target).sum().item()
        nll += (gaussian_nll(mean, var, values, target) * target.sum()).item()
        n += target.sum().item()
    model.train()
    return {"rmse": math.sqrt(se / n), "nll": nll / n}


def train(data_dir: Path, out: Path, *, steps: int = 3000, batch: int = 8, lr: float = 1e-3,
          device: str = "cpu", seed: int = 0, cache: Path | None = None, log_every: int = 50,
          config: ModelConfig | None = None, workers: int = 0, time_limit: float | None = None,
          init: Path | None = None) -> dict:
    """Train on data_dir/train, select on data_dir/val, save the best checkpoint to `out`.

    The learning rate warms up, then follows a cosine to zero over `steps` or over `time_limit`
    seconds, whichever comes first, so a run on any machine ends with a finished schedule.
    """
    torch.manual_seed(seed)
    train_images, val_images, gap_sources = _load_data(Path(data_dir), cache)
    print(f"{len(train_images)} training images, {len(val_images)} validation images, "
          f"{len(gap_sources)} real gap masks", flush=True)
    model = load_model(init, device).train() if init else ConvCNP(config).to(device)  # init: fine-tune a checkpoint
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    val_batches = validation_tasks(val_images, gap_sources)
    batches = _batch_stream(train_images, gap_sources, batch, seed, workers)
    best, history, start = None, [], time.time()
    step, progress = 0, 0.0
    while progress < 1.0:
        step += 1
        elapsed = time.time() - start
        progress = max(step / steps, elapsed / time_limit if time_limit else 0.0)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, step / 200) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        values, _, context, target, n_bands = next(batches)
        values, context, target = values.to(device), context.to(device), target.to(device)
        mean, var = model(values, context, n_bands)
        loss = gaussian_nll(mean, var, values, target, beta=BETA)
        if not torch.isfinite(loss):
            print(f"step {step}: non-finite loss, batch skipped", flush=True)
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or progress >= 1.0:
            scores = evaluate(model, val_batches, device)
            history.append({"step": step, "loss": loss.item(), **scores, "seconds": time.time() - start})
            print(json.dumps(history[-1]), flush=True)
            if best is None or scores["rmse"] < best["rmse"]:
                best = {"step": step, **scores}
                save_model(model, out, {"best": best, "steps": step, "batch": batch, "lr": lr,
                                        "seconds": time.time() - start, "device": str(device)})
    return {"best": best, "history": history}


def _load_data(data_dir: Path, cache: Path | None):
    if cache and Path(cache).exists():
        z = np.load(cache, allow_pickle=False)
        train_images = [_dequantise(z[k]) for k in sorted(z.files) if k.startswith("train")]
        val_images = [_dequantise(z[k]) for k in sorted(z.files) if k.startswith("val")]
        gaps = [(z[k], float(z["res" + k[3:]])) for k in sorted(z.files) if k.startswith("gap")]
        return train_images, val_images, gaps
    data = (load_images(data_dir / "train"), load_images(data_dir / "val"), load_gap_sources(data_dir / "slc_off"))
    if cache:
        arrays = {f"train{i:03d}": _quantise(a) for i, a in enumerate(data[0])}
        arrays.update({f"val{i:03d}": _quantise(a) for i, a in enumerate(data[1])})
        for i, (g, res) in enumerate(data[2]):
            arrays[f"gap{i:03d}"], arrays[f"res{i:03d}"] = g, np.float32(res)
        np.savez_compressed(cache, **arrays)
    return data


CACHE_STEP = 0.05  # z-score step of the int8 cache: well below the images' own noise, 3x smaller than float16


def _quantise(normed: np.ndarray) -> np.ndarray:
    q = np.clip(np.round(np.nan_to_num(normed) / CACHE_STEP), -127, 127).astype(np.int8)
    q[np.isnan(normed)] = -128
    return q


def _dequantise(q: np.ndarray) -> np.ndarray:
    return np.where(q == -128, np.nan, q.astype(np.float32) * CACHE_STEP).astype(np.float32)


def _batch_stream(images, gap_sources, batch, seed, workers):
    if workers <= 0:
        sampler = TaskSampler(images, gap_sources, seed=seed)
        while True:
            yield sampler.batch(batch)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            sampler = TaskSampler(images, gap_sources, seed=seed * 1000 + (info.id if info else 0))
            while True:
                yield sampler.batch(batch)

    loader = torch.utils.data.DataLoader(Stream(), batch_size=None, num_workers=workers, persistent_workers=True,
                                         pin_memory=torch.cuda.is_available())
    yield from loader
