"""Meta-training the ConvCNP on tiles of real Landsat scenes.

Every tile is a task: a random mask (simulated SLC-off stripes, real gap geometry, random pixels,
blocks; sometimes different per band) hides pixels, a random context density thins the rest, and
the model is trained to predict the hidden pixels with a Gaussian (negative log-likelihood).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from . import masks
from .errors import SceneError
from .model import REFERENCE_FILLS, ConvCNP, ModelConfig, gaussian_nll, load_model, normalise, save_model
from .scene import read_scene
from .tiling import autocast

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


# Co-registered dates of one place, for tasks with a second date as context. Evaluation pairs (test/
# Pennsylvania, STS-CNN auxiliary dates, Menindee, Colorado) are never listed here.
TRAIN_GROUPS = (
    "train/opengeos_data__pucallpa_*.tif",
    "train/xlandsat__LC08_L1TP_227074_*.tif",
    "train/xlandsat__LC08_L2SP_218074_*.tif",
    "train/teamlucc__L5TSR_*.tif",
    "pairs/nanjing_l5/*.tif",
    "pairs/fsdaf_gwydir/*.tif",
    "pairs/rsgislib_tanzania_s2/*.tif",
    "pairs/oscd_s2_30m/{city}_*.tif",  # one group per city (the name up to the first underscore)
)
VAL_GROUPS = ("pairs/estarfm_canada/*.tif", "pairs/eolearn_slovenia_s2/*.tif")


def load_groups(data_dir: Path, patterns) -> list[np.ndarray]:
    """Each pattern's dates as one D×C×H×W array (per file and band z-scores, nodata NaN), cropped to
    their common extent."""
    expanded = []
    for pattern in patterns:
        if "{city}" in pattern:
            cities = sorted({p.name.split("_")[0] for p in data_dir.glob(pattern.replace("{city}", "*"))})
            expanded += [pattern.replace("{city}", city) for city in cities]
        else:
            expanded.append(pattern)
    groups = []
    for pattern in expanded:
        paths = sorted(data_dir.glob(pattern))
        if len(paths) < 2:
            continue
        dates = []
        for path in paths:
            scene = read_scene(path)
            normed, _, _ = normalise(scene.bands, ~scene.nodata)
            normed[scene.nodata] = np.nan
            dates.append(normed)
        if len({d.shape[0] for d in dates}) != 1:
            continue
        h, w = min(d.shape[1] for d in dates), min(d.shape[2] for d in dates)
        groups.append(np.stack([d[:, :MAX_SIDE, :MAX_SIDE][:, :h, :w] for d in dates]))
    return groups


def load_gap_sources(folder: Path) -> list[tuple[np.ndarray, float]]:
    """Real SLC-off gap geometry (mask, pixel size) detected in the scenes of `folder`."""
    sources = []
    if not folder.is_dir():
        return sources
    for path in sorted(folder.glob("*.tif")):
        if "gapmask" in path.name:
            continue
        scene = read_scene(path)
        gaps = masks.detect_scene_gaps(scene)
        if gaps.any():
            sources.append((gaps[0], masks.pixel_metres(scene.pixel_size)))
    return sources


class TaskSampler:
    """Draws gap-filling tasks (values, known, context, target, reference, reference known) from real
    images; seeded. A task has no reference, another real date of the place (from `groups`), or a
    synthetic one (the same tile under a smooth change of gain and offset, blur, noise and pasted
    patches of other land), so the model learns to lean on a reference only where it agrees."""

    def __init__(self, images, gap_sources, tile=TILE, max_bands=MAX_BANDS, seed=0, groups=(),
                 reference_share=(0.0, 0.0)):
        self.images, self.gap_sources, self.tile, self.max_bands = images, gap_sources, tile, max_bands
        self.groups = [g for g in groups if min(g.shape[2:]) >= tile]
        self.real_share, self.synthetic_share = reference_share
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int):
        rng = self.rng
        n_bands = int(rng.choice(np.arange(1, self.max_bands + 1), p=self._band_weights()))
        pool = [im for im in self.images if len(im) >= n_bands]
        groups = [g for g in self.groups if g.shape[1] >= n_bands]
        tasks = []
        for _ in range(size):
            kind = rng.random()
            if kind < self.real_share and groups:
                tasks.append(self.pair_task(groups[rng.integers(len(groups))], n_bands))
            else:
                synthetic = kind < self.real_share + self.synthetic_share
                tasks.append(self.task(pool[rng.integers(len(pool))], n_bands, pool if synthetic else None))
        stacked = [torch.from_numpy(np.concatenate(parts))[:, None] for parts in zip(*tasks)]
        return (*stacked, n_bands)

    def _band_weights(self):
        w = np.array([3, 2, 3, 2, 1, 1][: self.max_bands], float)
        return w / w.sum()

    def _crop(self, image, n_bands, valid):
        """A random tile and band choice where `valid(tile)` holds (20 tries)."""
        rng, t = self.rng, self.tile
        for _ in range(20):
            r = rng.integers(0, image.shape[-2] - t + 1)
            c = rng.integers(0, image.shape[-1] - t + 1)
            bands = np.sort(rng.choice(image.shape[-3], n_bands, replace=False))
            tile = image[..., bands, r:r + t, c:c + t]
            if valid(tile):
                break
        flips = [axis for axis in (-1, -2) if rng.random() < 0.5]
        return np.flip(tile, flips).astype(np.float32) if flips else tile.astype(np.float32)

    def _jitter(self, values):
        """A random offset and scale, so the model does not rely on exact z-scores."""
        return values * math.exp(self.rng.normal(0, 0.3)) + self.rng.normal(0, 0.3)

    def task(self, image: np.ndarray, n_bands: int, synthetic_pool=None):
        values = self._jitter(self._crop(image, n_bands, lambda v: np.isfinite(v).mean() > 0.8))
        reference = self.synthetic_reference(values, synthetic_pool) if synthetic_pool else None
        return self._finish(values, reference)

    def pair_task(self, group: np.ndarray, n_bands: int):
        rng = self.rng
        target, other = rng.choice(len(group), 2, replace=False)
        pair = self._crop(group[[target, other]], n_bands,
                          lambda v: np.isfinite(v[0]).mean() > 0.8 and np.isfinite(v[1]).mean() > 0.3)
        return self._finish(self._jitter(pair[0]), self._jitter(pair[1]))

    def synthetic_reference(self, values, pool):
        """The tile as another date might show it."""
        rng, t = self.rng, self.tile
        if rng.random() < 0.05:  # an unrelated image: the model must learn to ignore it
            return self._jitter(self._crop(pool[rng.integers(len(pool))], len(values), lambda v: True))
        ref = np.nan_to_num(values)
        if rng.random() < 0.5:
            ref = ndimage.gaussian_filter(ref, (0, *(rng.uniform(0.3, 1.2),) * 2))
        for b in range(len(ref)):
            gain = np.exp(rng.normal(0, 0.3) + 0.3 * _smooth_field(rng, t))
            ref[b] = gain * ref[b] + rng.normal(0, 0.5) + 0.4 * _smooth_field(rng, t)
        ref += rng.normal(0, rng.uniform(0, 0.15), ref.shape)
        for _ in range(rng.integers(0, 4)):  # land that changed between the dates
            h, w = rng.integers(8, 48, size=2)
            r, c = rng.integers(0, t - h), rng.integers(0, t - w)
            donor = self._crop(pool[rng.integers(len(pool))], len(values), lambda v: True)
            ref[:, r:r + h, c:c + w] = np.nan_to_num(donor[:, r:r + h, c:c + w])
        ref[~np.isfinite(values)] = np.nan
        return ref.astype(np.float32)

    def _finish(self, values, reference):
        rng = self.rng
        known = np.isfinite(values)
        values = np.nan_to_num(values)
        hidden = self.mask(len(values))
        density = 1.0 if rng.random() < 0.7 else rng.uniform(0.05, 1.0)
        context = known & ~hidden & (rng.random(values.shape) < density)
        target = known & ~context
        if reference is None:
            ref_known = np.zeros(values.shape, bool)
        else:
            ref_known = np.isfinite(reference)
            if rng.random() < 0.3:  # the other date has gaps of its own (SLC-off too, or clouds)
                ref_known &= ~self.mask(len(values))
        reference = np.where(ref_known, np.nan_to_num(reference if reference is not None else values), 0)
        return (values, known.astype(np.float32), context.astype(np.float32), target.astype(np.float32),
                reference.astype(np.float32), ref_known.astype(np.float32))

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


def _smooth_field(rng, size: int) -> np.ndarray:
    """A smooth random field of unit scale over size×size pixels (bilinear from a coarse grid)."""
    coarse = rng.normal(size=(rng.integers(2, 6),) * 2)
    return ndimage.zoom(coarse, size / coarse.shape[0], order=1)[:size, :size]


def validation_tasks(images, gap_sources, count=48, seed=1234, groups=(), tile=TILE):
    """A fixed, seeded set of tasks on the validation scenes, for model selection: single-image tasks, or
    with `groups`, tasks with the other date of a validation place as reference."""
    sampler = TaskSampler(images, gap_sources, seed=seed, groups=groups, tile=tile,
                          reference_share=(1.0, 0.0) if groups else (0.0, 0.0))
    return [sampler.batch(8) for _ in range(count // 8)]


@torch.no_grad()
def evaluate(model, batches, device):
    """Gap RMSE and NLL (normalised units) over validation batches."""
    model.eval()
    se = nll = n = 0.0
    for values, _, context, target, ref, ref_known, n_bands in batches:
        values, context, target = values.to(device), context.to(device), target.to(device)
        mean, var = model(values, context, n_bands, ref.to(device), ref_known.to(device))
        se += (((mean - values) ** 2) * target).sum().item()
        nll += (gaussian_nll(mean, var, values, target) * target.sum()).item()
        n += target.sum().item()
    model.train()
    return {"rmse": math.sqrt(se / n), "nll": nll / n}


def with_reference(model: ConvCNP) -> ConvCNP:
    """A reference-taking copy of a single-image model that answers exactly as it did while no reference is
    given: the new input channels start at zero weight, the reference gate half open."""
    if model.config.reference:
        raise ValueError("this model already takes a reference")
    config = ModelConfig(**{**asdict(model.config), "reference": True})
    wider = ConvCNP(config)
    state = wider.state_dict()
    old = model.state_dict()
    for key, value in old.items():
        if state[key].shape == value.shape:
            state[key] = value.clone()
    n_old = old["inp.weight"].shape[1] // 2  # inputs: the band's features, then their mean over bands
    n_new = state["inp.weight"].shape[1] // 2
    state["inp.weight"].zero_()
    state["inp.weight"][:, :n_old] = old["inp.weight"][:, :n_old]
    state["inp.weight"][:, n_new:n_new + n_old] = old["inp.weight"][:, n_old:]
    state["head.weight"].zero_()
    state["head.weight"][:2] = old["head.weight"]
    state["head.bias"].zero_()
    state["head.bias"][:2] = old["head.bias"]
    wider.load_state_dict(state)
    wider.info = getattr(model, "info", {})
    return wider


@dataclass
class TrainingData:
    images: list  # single scenes of train/, per-band z-scores, NaN = nodata
    val_images: list
    gap_sources: list  # (real gap mask, pixel size)
    groups: list  # D×C×H×W dates of one place (train)
    val_groups: list


def train(data_dir: Path, out: Path, *, steps: int = 3000, batch: int = 8, lr: float = 1e-3,
          device: str = "cpu", seed: int = 0, cache: Path | None = None, log_every: int = 50,
          config: ModelConfig | None = None, workers: int = 0, time_limit: float | None = None,
          init: Path | None = None, reference: bool = True, precision: str = "float32",
          reference_share: tuple[float, float] = (0.35, 0.25), warmup: int = 200, last: Path | None = None) -> dict:
    """Train on data_dir/train (and the training pairs), select on data_dir/val and the validation pairs,
    save the best checkpoint to `out`.

    reference: train the model that also takes another date (one checkpoint for both modes; a
    single-image `init` is widened by `with_reference`). reference_share: the share of tasks with a
    real other date and with a synthetic one. The learning rate warms up, then follows a cosine to zero
    over `steps` or over `time_limit` seconds, whichever comes first, so a run on any machine ends with
    a finished schedule (after `warmup` steps of linear warm-up). precision "bfloat16" trains under
    autocast (faster on CPUs with AVX-512 BF16). last: also save the weights at the end here (the best on a
    small validation set need not be the best on the benchmarks).
    """
    if warmup < 1:
        raise ValueError(f"warmup must be 1 step or more, not {warmup}")
    torch.manual_seed(seed)
    if str(device).startswith("cpu"):
        from .cpu_kernels import cpu_precision

        precision = cpu_precision(precision)[0]  # bfloat16 only where the CPU runs it natively
    data = _load_data(Path(data_dir), cache)
    print(f"{len(data.images)} training images, {len(data.val_images)} validation images, "
          f"{len(data.gap_sources)} real gap masks, {len(data.groups)} training and {len(data.val_groups)} "
          f"validation places with several dates", flush=True)
    if init:  # fine-tune a checkpoint
        model = load_model(init, "cpu")
        model = with_reference(model) if reference and not model.config.reference else model
        # the network trains alone, and is saved without the blends: their priors suit the network they were
        # fitted for; fit them again for the new one (benchmarks/biharmonic_blend.py, reference_blend.py)
        model.config = replace(model.config, biharmonic_weight=0.0,
                               **{f"{name}_weight": 0.0 for name in REFERENCE_FILLS})
    else:
        model = ConvCNP(ModelConfig(**{**asdict(config or ModelConfig()), "reference": reference}))
    model = model.to(device).train()
    reference = model.config.reference
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    val_sets = {"single": validation_tasks(data.val_images, data.gap_sources)}
    if reference and data.val_groups:
        val_sets["reference"] = validation_tasks(data.val_images, data.gap_sources, groups=data.val_groups, tile=96)
    share = reference_share if reference else (0.0, 0.0)
    batches = _batch_stream(data, batch, seed, workers, share)
    best, history, start = None, [], time.time()

    def run_info(step):
        return {"steps": step, "batch": batch, "lr": lr, "seconds": time.time() - start, "device": str(device),
                "precision": precision, "reference_share": list(share), "init": str(init) if init else None,
                "lineage": getattr(model, "info", {}).get("lineage", [])}

    step, progress = 0, 0.0
    while progress < 1.0:
        step += 1
        elapsed = time.time() - start
        progress = max(step / steps, elapsed / time_limit if time_limit else 0.0)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, step / warmup) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        values, _, context, target, ref, ref_known, n_bands = next(batches)
        values, context, target = values.to(device), context.to(device), target.to(device)
        with autocast(str(device), precision):
            mean, var = model(values, context, n_bands, ref.to(device), ref_known.to(device))
        loss = gaussian_nll(mean.float(), var.float(), values, target, beta=BETA)
        if not torch.isfinite(loss):
            print(f"step {step}: non-finite loss, batch skipped", flush=True)
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or progress >= 1.0:
            scores = {name: evaluate(model, tasks, device) for name, tasks in val_sets.items()}
            score = sum(s["rmse"] for s in scores.values())  # selection: both modes count
            history.append({"step": step, "loss": loss.item(), "score": score, **scores,
                            "seconds": time.time() - start})
            print(json.dumps(history[-1]), flush=True)
            if best is None or score < best["score"]:
                best = {"step": step, "score": score, **scores}
                save_model(model, out, {"best": best, **run_info(step)})
    if last:
        save_model(model, last, {"last": history[-1] if history else None, **run_info(step)})
    if reference and best is not None:
        print(json.dumps({"reference_variance_scale": calibrate_reference_variance(out, Path(data_dir))}), flush=True)
    return {"best": best, "history": history}


def calibrate_reference_variance(checkpoint: Path, data_dir: Path, seeds=(0, 1, 2)) -> float | None:
    """Scale the variance of a reference-taking checkpoint where the reference is known so that its gap errors
    are calibrated on the validation pairs (pairs/estarfm_canada, simulated stripes): the NLL-optimal scale of a
    Gaussian is the mean squared standardised error. Training pairs are easier than real ones (synthetic pairs
    change less than seasons do), so the raw variance is too small there. Returns the scale (None: no pairs)."""
    from .evaluate import validation_pair_cases
    from .inpaint import fill

    folder = Path(data_dir) / "pairs" / "estarfm_canada"
    if not folder.is_dir():
        return None
    model = load_model(checkpoint)
    model.config.reference_variance_scale = 1.0
    squared = []
    for _, bands, gaps, _, reference in validation_pair_cases(folder, seeds):
        given = np.where(gaps, np.nan, bands)
        result = fill(given, gaps, model=model, device="cpu", reference=reference, nodata=~np.isfinite(bands) & ~gaps)
        scored = gaps & np.isfinite(reference) & np.isfinite(bands)
        squared.append((result.mean - bands)[scored] ** 2 / result.variance[scored])
    scale = float(np.mean(np.concatenate(squared)))
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["config"]["reference_variance_scale"] = scale
    ckpt["info"]["reference_variance_scale"] = f"{scale:.4f}, fitted on pairs/estarfm_canada (seeds {list(seeds)})"
    torch.save(ckpt, checkpoint)
    return scale


def _load_data(data_dir: Path, cache: Path | None) -> TrainingData:
    if cache and Path(cache).exists():
        z = np.load(cache, allow_pickle=False)

        def arrays(prefix):
            return [_dequantise(z[k]) for k in sorted(z.files) if k.startswith(prefix)]

        gaps = [(z[k], float(z["res" + k[3:]])) for k in sorted(z.files) if k.startswith("gap")]
        return TrainingData(arrays("train"), arrays("val"), gaps, arrays("tgroup"), arrays("vgroup"))
    data = TrainingData(load_images(data_dir / "train"), load_images(data_dir / "val"),
                        load_gap_sources(data_dir / "slc_off"), load_groups(data_dir, TRAIN_GROUPS),
                        load_groups(data_dir, VAL_GROUPS))
    if cache:
        arrays = {f"train{i:03d}": _quantise(a) for i, a in enumerate(data.images)}
        arrays.update({f"val{i:03d}": _quantise(a) for i, a in enumerate(data.val_images)})
        arrays.update({f"tgroup{i:03d}": _quantise(a) for i, a in enumerate(data.groups)})
        arrays.update({f"vgroup{i:03d}": _quantise(a) for i, a in enumerate(data.val_groups)})
        for i, (g, res) in enumerate(data.gap_sources):
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


def _batch_stream(data: TrainingData, batch, seed, workers, reference_share):
    def sampler(worker=0):
        return TaskSampler(data.images, data.gap_sources, seed=seed * 1000 + worker, groups=data.groups,
                           reference_share=reference_share)

    if workers <= 0:
        tasks = sampler()
        while True:
            yield tasks.batch(batch)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            tasks = sampler(info.id if info else 0)
            while True:
                yield tasks.batch(batch)

    loader = torch.utils.data.DataLoader(Stream(), batch_size=None, num_workers=workers, persistent_workers=True,
                                         pin_memory=torch.cuda.is_available())
    yield from loader
