"""Every date of a stack filled from the others: for each target date, the other dates ranked and fused into one
reference (`fusion`), then one `inpaint.fill`. Arrays in, Fills out; the file layer (`fill_stack_files`) reads a
`stack.Stack` and writes what `fill-many` writes, per date.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import FillError, OptionError
from .fusion import MAX_REFERENCES, as_date, fuse_references, rank_references
from .inpaint import Cancelled, Fill, fill
from .options import USES_REFERENCE, is_whole
from .views import BandWindows, FloatView


@dataclass
class StackFill:
    """One date of a stack filled from the others: its Fill, the references used, as (index of the date in the
    stack, its mean weight in the fused reference), and how many values were filled (0: a clear date, as it is)."""

    date: datetime.date
    fill: Fill
    references: list[tuple[int, float]]
    filled_values: int = 0


def check_max_references(value) -> int:
    if not is_whole(value) or value < 1:
        raise OptionError(f"max_references must be a whole number, 1 or more, not {value!r}")
    return int(value)


FILLED = {False: "nodata and stripes", True: "nodata, stripes and clouds"}  # what a target's fill covers


def target_holes(bands, unusable, cloudy=None, fill_clouds=False) -> tuple[np.ndarray, np.ndarray]:
    """(holes C×H×W, kept H×W) for one date (bands C×H×W, NaN unknown; unusable H×W): the values its fill
    covers, and the unusable pixels that keep their values (neither filled nor context). Holes are the unknown
    values and every value of an unusable pixel but a kept one; an unusable pixel with all its values is kept
    (snow is that day's surface; a cloud unless fill_clouds). cloudy: H×W, the clouds among the unusable pixels
    (default: every unusable pixel with values)."""
    finite = np.stack([np.isfinite(band) for band in bands])  # band by band: a lazy date is never decoded whole
    unusable = np.asarray(unusable, bool)
    kept = unusable & finite.all(0)
    if fill_clouds:
        kept &= False if cloudy is None else ~np.asarray(cloudy, bool)
    return ~(finite & ~unusable) & ~kept, kept


def _as_is(bands, fill_options) -> Fill:
    """A date with nothing to fill as a Fill: its own values, variance 0 (the ConvNP's, which has one)."""
    method = fill_options.get("method", "convnp")
    values = np.array(bands, np.float32)
    return Fill(values, np.zeros_like(values) if method == "convnp" else None, method,
                float(fill_options.get("density", 1.0)), "none", 0.0)


def _usable_bands(bands, unusable):
    """A date's bands with NaN where a pixel is unusable or unknown; window by window where the bands are read so
    (`read_scene(lazy_float=True)`), so that a target and its references are never in memory whole."""
    if isinstance(bands, BandWindows):
        return FloatView(bands, np.broadcast_to(unusable, bands.shape))
    return np.where(np.isfinite(bands) & ~unusable, bands, np.nan)


def _finish(mean, variance, bands, kept, holes, spread) -> None:
    """A target's fill (or a band of its rows, with the same rows of the others) finished in place: kept pixels
    their own values and variance 0, the references' disagreement (`spread`, or None) added to the variance."""
    np.copyto(mean, bands, where=kept)
    if variance is not None:
        np.copyto(variance, 0, where=kept)
        if spread is not None:  # the references' disagreement, which one fused reference cannot show
            variance += np.where(holes & np.isfinite(spread), spread, 0)


class AtHoles:
    """A C×H×W array kept only where holes (C×H×W bool) are: band by band its values there (NaN as 0) and where each
    row's begin, a quarter of a scene's memory where a quarter of it is filled. `rows(r0, r1)` gives rows back as
    C×(r1−r0)×W, 0 off the holes."""

    def __init__(self, values, holes):
        self.holes = holes
        self.values = [np.nan_to_num(np.asarray(v, np.float32)[h], nan=0.0) for v, h in zip(values, holes)]
        self.starts = [np.concatenate([[0], np.cumsum(np.count_nonzero(h, 1))]) for h in holes]

    def rows(self, r0: int, r1: int) -> np.ndarray:
        out = np.zeros((len(self.values), r1 - r0, self.holes.shape[2]), np.float32)
        for b, (values, starts) in enumerate(zip(self.values, self.starts)):
            out[b][self.holes[b, r0:r1]] = values[starts[r0]:starts[r1]]
        return out


def fill_stack(bands, unusable, dates, *, targets=None, max_references: int = MAX_REFERENCES, fill_clouds=False,
               cloudy=None, progress: Callable[[int, int], None] | None = None,
               cancelled: Callable[[], bool] | None = None, chosen=None, on_rows=None,
               **fill_options) -> list[StackFill]:
    """Every date of a stack (or those of `targets`, indices) filled from the others with one `inpaint.fill` each.

    bands: per date C×H×W float32, NaN where unknown (stripes, nodata); unusable: per date H×W bool, the pixels
    a quality mask rules out (cloud, shadow, snow, fill): never context, in the target nor in a reference;
    dates: per date a date. The holes filled are the unknown pixels and the unusable ones without values, and
    with fill_clouds the clouds too (`cloudy`, per date H×W; by default every unusable pixel that has values);
    clouds not filled, and snow, keep their values (variance 0, as kept pixels) (`target_holes`). A date
    with no hole comes back as it is, with no reference. For each target up to max_references dates
    are ranked (`rank_references`), fused (`fuse_references`) and given to `fill` as its one reference; where
    they disagree, their spread widens the returned variance; a method that takes no reference (a single-image
    baseline) fills each date from its own pixels. chosen: per target index, the dates (indices) to fill it from,
    ranked beforehand, as `rank_references` gives them (the xarray adapter ranks once on the whole stack and fills
    it window by window). on_rows: stream each target's result instead of returning it, as on_rows(target index,
    first row, mean, variance, references used as StackFill has them) with bands of rows, as `inpaint.fill`
    streams them (the Fills' mean and variance are then None); with bands read window by window (a lazy Scene's),
    a target then never holds its dates whole. fill_options go to `fill` (method, device, …)."""
    n = len(bands)
    if n == 0:
        raise FillError("the stack is empty: give at least one date")
    if len(unusable) != n or len(dates) != n or (cloudy is not None and len(cloudy) != n):
        raise FillError(f"the stack has {n} dates of bands but {len(unusable)} unusable masks and {len(dates)} "
                        "dates" + ("" if cloudy is None else f" and {len(cloudy)} cloud masks") + ": give one each")
    check_max_references(max_references)
    days = [as_date(d) for d in dates]
    if len(set(days)) != n:
        twice = sorted({d for d in days if days.count(d) > 1})[0]
        raise FillError(f"date {twice} appears twice in the stack: each date once")
    shape = np.shape(bands[0])
    bands = [b if isinstance(b, BandWindows) else np.asarray(b, np.float32) for b in bands]
    unusable = [np.asarray(u, bool) for u in unusable]
    for i, (b, u) in enumerate(zip(bands, unusable)):
        if len(b.shape) != 3 or b.shape != shape or u.shape != shape[1:]:
            raise FillError(f"date {days[i]}: bands {b.shape} and unusable mask {u.shape} do not match the first "
                            f"date's {shape} and {shape[1:]}")
    targets = range(n) if targets is None else list(targets)
    wrong = [t for t in targets if not is_whole(t) or not 0 <= t < n]
    if wrong:
        raise FillError(f"target {wrong[0]!r} is not a date of the stack: give indices 0 to {n - 1}")
    uses_reference = fill_options.get("method", "convnp") in USES_REFERENCE  # else a single-image fill per date
    results = []
    for done, t in enumerate(targets):
        if cancelled and cancelled():
            raise Cancelled()
        holes, kept = target_holes(bands[t], unusable[t], None if cloudy is None else cloudy[t], fill_clouds)
        if not holes.any():  # a clear date: nothing to fill, it comes back as it is
            as_is = _as_is(bands[t], fill_options)
            if on_rows is not None:
                on_rows(t, 0, as_is.mean, as_is.variance, [])
                as_is.mean = as_is.variance = None
            results.append(StackFill(days[t], as_is, [], 0))
            continue
        if not uses_reference:
            picked = []
        elif chosen is not None:
            picked = list(chosen[t])
        else:
            usable = [np.isfinite(b) & ~u for b, u in zip(bands, unusable)]
            picked = rank_references(usable, days, t, int(max_references), bands=bands)
            del usable
        references = [_usable_bands(bands[i], unusable[i]) for i in picked]
        # the target's usable pixels: fuse_references takes them with its known values
        fused = fuse_references(bands[t], ~unusable[t], references, parts=("reference", "spread")) if picked else None
        del references
        reference, spread, weights = (None, None, []) if fused is None else (fused.reference,
                                                                            AtHoles(fused.spread, holes), fused.weights)
        del fused  # its spread is kept only at the holes: a scene's worth of memory
        step = progress and (lambda d, total, done=done: progress(done * total + d, len(targets) * total))
        kept_values = np.broadcast_to(kept, holes.shape)

        used = list(zip(picked, weights))

        def finished(r0, mean, variance, t=t, holes=holes, kept=kept_values, spread=spread, used=used):
            rows = slice(r0, r0 + mean.shape[1])
            _finish(mean, variance, bands[t][:, rows], kept[:, rows], holes[:, rows],
                    None if spread is None else spread.rows(rows.start, rows.stop))
            if on_rows is not None:
                on_rows(t, r0, mean, variance, used)

        streamed = {} if on_rows is None else {"on_rows": finished}
        result = fill(_usable_bands(bands[t], unusable[t]), holes, nodata=kept_values,
                      reference=reference, progress=step, cancelled=cancelled, **streamed, **fill_options)
        if result.mean is not None:
            finished(0, result.mean, result.variance)
        results.append(StackFill(days[t], result, used, int(np.count_nonzero(holes))))
    return results
