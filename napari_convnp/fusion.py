"""Several dates of one place as one reference.

`rank_references` picks the dates worth using for a target; `fuse_references` makes them one reference on the
target's scale, each weighted pixel by pixel by how well it predicts the target around that pixel (a date that
matches the target in one field and not in the next gets the weight only where it matches). `inpaint.fill` fuses
several references with it; `stack_fill.fill_stack` does both for each date of a stack. numpy and torch only.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np

from .errors import FillError
from .system import release_free_memory

# The ranking: score = share of the target's holes a date knows − DAY_WEIGHT·(years apart)
# − SEASON_WEIGHT·(season apart, in half years) − FIT_WEIGHT·(held-out relative error of a linear fit of the
# target on the date). Chosen on the val/ and train/ series (benchmarks/stack.md), never on Colorado or Menindee.
DAY_WEIGHT = 0.1
SEASON_WEIGHT = 0.2
FIT_WEIGHT = 1.0
MAX_REFERENCES = 3  # K, chosen on the same series
FIT_PIXELS = 20_000  # pixels (at most) the ranking's held-out fit looks at: a subsample on large scenes
FIT_BLOCK = 8  # the held-out fit learns on every other FIT_BLOCK² block (a checkerboard) and is scored on the rest

# The fusion: each reference's local fit error is the mean squared residual of its local linear fit over the target's
# known pixels in an ERROR_WINDOW² window, shrunk towards its global error by ERROR_PRIOR pixels' worth (a window
# inside a wide cloud has few known pixels).
ERROR_WINDOW = 21
FIT_MIN_PIXELS = 4.0  # the local fit leans on the global one where its window shares fewer pixels than this;
# both lower than the model's own (24, 0.05): a fit that leans on a global one cannot tell where a date matches
FIT_RIDGE = 0.005  # its slopes' shrinkage towards the global slope (z-score units)
ERROR_PRIOR = 2.0
# rows fused at a time, plus MARGIN rows each side: memory bounded on whole scenes (4096² with 3 references of 3
# bands: 1.2 GB of working memory, 2.7 GB at 512 rows and slower; results the same to float32 rounding)
BLOCK_ROWS = 128
MARGIN = 32  # covers the widest fit window's half (15) and the error window's (10)


@dataclass
class Fused:
    """Several references as one, on the target's scale (C×H×W float32, NaN where no reference knows a pixel).

    variance: the references' weighted spread about the fused value (their disagreement) plus their weighted local
    fit errors; spread: the first part alone. weights: each reference's mean share of the weight over the pixels
    where any reference is known."""

    reference: np.ndarray
    variance: np.ndarray | None  # None where not asked for (`fuse_references(parts=…)`)
    spread: np.ndarray | None
    weights: list[float]


def _plane(known) -> np.ndarray:
    """Known pixels as H×W: a pixel counts where every band is known."""
    known = np.asarray(known, bool)
    return known.all(0) if known.ndim == 3 else known


def as_date(value) -> datetime.date:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[D]").item()
    try:
        return datetime.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise FillError(f"date {value!r}: not a date (give datetime.date or 'YYYY-MM-DD')") from None


def days_apart(a: datetime.date, b: datetime.date) -> tuple[int, int]:
    """(days between a and b, days between their days of the year, round the year)."""
    days = abs((a - b).days)
    season = abs(a.timetuple().tm_yday - b.timetuple().tm_yday) % 365
    return days, min(season, 365 - season)


def fit_sample(shape: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of an H×W scene the ranking's held-out fit looks at: every step-th of each, so at most
    about FIT_PIXELS pixels (all of a small scene)."""
    h, w = shape
    step = max(1, int(np.sqrt(h * w / FIT_PIXELS)))
    return slice(None, None, step), slice(None, None, step)


def held_out_error(target, target_known, reference, reference_known=None, *, step: int | None = None) -> float:
    """How badly a per-band linear fit of the target on the reference predicts pixels it was not fitted on, as a
    share of the target's variance there (0 perfect, about 1 no better than the mean), averaged over the bands;
    1 where they share too few known pixels to say. Fitted on a checkerboard of blocks, scored on the others;
    on a subsample of the pixels of a large scene (`fit_sample`), read a row at a time (the arrays may be windowed
    views of whole scenes). Known pixels: H×W or C×H×W (a pixel counts where every band is known); reference_known
    None: where the reference is finite. step: the arrays are that subsample already, taken every `step` pixels
    (what a stack's ranking keeps of each date instead of its bands)."""
    from .reference import linear_fit

    if step is None:
        step = fit_sample(target.shape[-2:])[0].step
        target, reference, target_known = _every(target, step), _every(reference, step), _every(target_known, step)
        reference_known = None if reference_known is None else _every(reference_known, step)
    if reference_known is None:
        reference_known = np.isfinite(reference)
    both = _plane(target_known) & _plane(reference_known)
    rows, cols = np.indices(both.shape) * step // FIT_BLOCK
    learn = (rows + cols) % 2 == 0
    if (both & learn).sum() < 100 or (both & ~learn).sum() < 100:
        return 1.0
    errors = []
    for tb, rb in zip(np.asarray(target, np.float64), np.asarray(reference, np.float64)):
        gain, offset = linear_fit(np.where(both & learn, rb, np.nan), np.where(both & learn, tb, np.nan))
        test = both & ~learn
        truth = tb[test]
        mse = np.mean((gain * rb[test] + offset - truth) ** 2)
        errors.append(float(min(mse / max(truth.var(), 1e-12), 2.0)))
    return float(np.mean(errors))


def _every(array, step: int) -> np.ndarray:
    """array[..., ::step, ::step] as numpy, read a row at a time: a windowed view (a file, an aligned reference)
    is never read whole for a subsample."""
    if isinstance(array, np.ndarray) or step == 1:
        return np.asarray(array[..., ::step, ::step])
    return np.stack([np.asarray(array[..., r:r + 1, :])[..., 0, ::step] for r in range(0, array.shape[-2], step)],
                    axis=-2)


def reference_terms(known, dates, target: int, *, bands=None,
                    sampled: bool = False) -> list[tuple[int, float, float, float, float]]:
    """Per other date that knows some of the target's holes: (its index, the share of the holes it knows, years
    apart, half years apart in season, `held_out_error` of the target on it, 0 without bands). sampled: each of
    `bands` is only its date's `fit_sample` (C×h×w), not the whole date."""
    planes = [_plane(k) for k in known]
    days = [as_date(d) for d in dates]
    holes = ~planes[target]
    rows, cols = fit_sample(holes.shape)
    terms = []
    for i, plane in enumerate(planes):
        if i == target:
            continue
        cover = (plane & holes).sum() / holes.sum() if holes.any() else plane.mean()
        if cover == 0:
            continue
        apart, season = days_apart(days[i], days[target])
        if bands is None:
            error = 0.0
        elif sampled:
            error = held_out_error(bands[target], planes[target][rows, cols], bands[i], plane[rows, cols],
                                   step=rows.step)
        else:
            error = held_out_error(bands[target], planes[target], bands[i], plane)
        terms.append((i, float(cover), apart / 365, season / 182.5, error))
    return terms


def ranked(terms, k: int, weights=None) -> list[int]:
    """The indices of the k best dates by `reference_terms`: share of the holes known less the weighted time,
    season and fit terms (weights: DAY_WEIGHT, SEASON_WEIGHT, FIT_WEIGHT unless given)."""
    day, season, fit = weights or (DAY_WEIGHT, SEASON_WEIGHT, FIT_WEIGHT)
    scores = sorted((-(cover - day * years - season * seasons - fit * error), i)
                    for i, cover, years, seasons, error in terms)
    return [i for _, i in scores[:k]]


def rank_references(known, dates, target: int, k: int, *, bands=None, sampled: bool = False) -> list[int]:
    """The indices of up to k other dates to fill date `target` from, best first.

    known: per date, its usable pixels (H×W or C×H×W bool: a reference's clouds are never usable); dates: per date a
    date; bands: per date C×H×W (NaN unknown), to score how well each date predicts the target where both are
    known (left out of the score without it). A date is ranked by the share of the target's holes it knows, how
    close it is in time and in season and that fit (`reference_terms`); dates that know none of the holes are
    left out. sampled: `bands` holds only each date's `fit_sample`, all the fit looks at."""
    return ranked(reference_terms(known, dates, target, bands=bands, sampled=sampled), k)


PARTS = ("reference", "variance", "spread")


def fuse_references(target, target_known, references, parts=PARTS) -> Fused:
    """The references (C×H×W, NaN unknown) as one on the target's scale: each fitted to the target by the model's
    local linear fit (`solvers.local_linear_fit`, its windows), weighted per pixel by the inverse of its local fit
    error there, the weights normalised over the references that know the pixel. target: C×H×W (array-like,
    read in row blocks); target_known: its known pixels (H×W or C×H×W). Pixels no reference knows stay NaN, and
    so do those known only by a reference that shares no known pixel with the target within the block. parts: those
    of PARTS to return (the others None): each is a scene's worth of memory, the peak of a stack's target."""
    import torch

    from .model import ModelConfig

    if not references:
        raise FillError("fuse_references needs at least one reference")
    c, h, w = target.shape
    for ref in references:
        if tuple(ref.shape) != (c, h, w):
            raise FillError(f"a reference of shape {tuple(ref.shape)} does not fit the target's {(c, h, w)}")
    windows = ModelConfig().regression_window
    out = [np.full((c, h, w), np.nan, np.float32) if part in parts else None for part in PARTS]
    weight_sums, weight_count = np.zeros(len(references)), 0
    for r0 in range(0, h, BLOCK_ROWS):
        a, b = max(0, r0 - MARGIN), min(h, r0 + BLOCK_ROWS + MARGIN)
        keep = slice(r0 - a, min(h, r0 + BLOCK_ROWS) - a)
        values = np.asarray(target[:, a:b], np.float32)
        known = np.broadcast_to(np.asarray(target_known[..., a:b, :], bool), values.shape)
        refs = [np.asarray(ref[:, a:b], np.float32) for ref in references]
        for band in range(c):  # one band at a time (the fit is per band): the fits' temporaries are one band's
            fused, some, weights = _fuse_rows(values[band:band + 1], known[band:band + 1],
                                              [ref[band:band + 1] for ref in refs], windows)
            for array, part in zip(out, fused):
                if array is not None:
                    array[band, a:b][keep] = torch.where(some, part, torch.nan)[0, 0, keep].numpy()
            inside = some[:, :, keep]
            weight_count += int(inside.sum())
            for i, weight in enumerate(weights):
                weight_sums[i] += float(weight[:, :, keep][inside].sum())
            del fused, some, weights, inside
            release_free_memory()  # the temporaries' heap memory back before the next band's
    weights = [float(s / max(weight_count, 1)) for s in weight_sums]
    return Fused(out[0], out[1], out[2], weights)


def _fuse_rows(values: np.ndarray, known: np.ndarray, references: list[np.ndarray], windows):
    """`fuse_references` on one block of rows (C×h×W each, NaN unknown in the references): (mean, variance, spread)
    as C×1×h×W tensors, where any reference is fitted (`some`), and each reference's normalised weight."""
    import torch

    from .model import band_stats
    from .solvers import box_means, local_linear_fit

    area = ERROR_WINDOW ** 2
    values = torch.from_numpy(values.copy())[:, None]
    known = torch.from_numpy(known.copy())[:, None] & torch.isfinite(values)
    offsets, scales = band_stats(values[:, 0].numpy(), known[:, 0].numpy())
    offsets, scales = torch.from_numpy(offsets)[:, None, None, None], torch.from_numpy(scales)[:, None, None, None]
    values = torch.where(known, (values - offsets) / scales, 0)  # z-scores: the fit's ridge is set in them
    fits, weights, errors = [], [], []
    for ref in references:
        ref = torch.from_numpy(ref.copy())[:, None]
        ref_known = torch.isfinite(ref)
        ref_offsets, ref_scales = (torch.from_numpy(x)[:, None, None, None]
                                   for x in band_stats(ref[:, 0].numpy(), ref_known[:, 0].numpy()))
        ref = torch.where(ref_known, (ref - ref_offsets) / ref_scales, 0)
        fitted = local_linear_fit(values, known, ref, ref_known, windows, FIT_MIN_PIXELS, FIT_RIDGE)
        both = (known & ref_known).float()
        squared = both * (fitted - values) ** 2
        overall = squared.sum((-2, -1), keepdim=True) / both.sum((-2, -1), keepdim=True).clamp_min(1)
        local_sq, local_n = box_means(torch.cat([squared, both], 1), (ERROR_WINDOW,))[0].chunk(2, 1)
        error = (local_sq * area + ERROR_PRIOR * overall) / (local_n * area + ERROR_PRIOR)
        fits.append(fitted)
        errors.append(error)
        # a band that shares no known pixel with the target here cannot be fitted: no weight
        fitted_here = ref_known & (both.sum((-2, -1), keepdim=True) > 0)
        weights.append(torch.where(fitted_here, 1 / (error + 1e-6), 0))
    total = sum(weights)
    weights = [weight / total.clamp_min(1e-30) for weight in weights]  # normalised: they sum to 1
    mean = sum(weight * fitted for weight, fitted in zip(weights, fits))
    spread = sum(weight * (fitted - mean) ** 2 for weight, fitted in zip(weights, fits))
    fit_error = sum(weight * error for weight, error in zip(weights, errors))
    mean = mean * scales + offsets
    spread, fit_error = spread * scales ** 2, fit_error * scales ** 2
    return (mean, spread + fit_error, spread), total > 0, weights
