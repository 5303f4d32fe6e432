"""`fill_stack` on an xarray DataArray (time, band, y, x), as rioxarray, stackstac and odc-stac give a stack, lazily on
Dask: every date of the stack filled from the others, window by window, never the whole stack in memory.

Three stages in one Dask graph: the references of each date ranked once on a subsample of the whole stack (as
`fusion.held_out_error` subsamples a large scene), so every window fills a date from the same dates; each window (a
y/x chunk, every date and band, widened by `overlap` pixels each side) filled by `stack_fill.fill_stack`; the windows'
Gaussians blended across the 2·overlap pixels neighbours share with the tiler's raised-cosine ramp
(`tiling.blend_window`), so no seam shows where chunks meet. xarray is an optional extra
(`pip install napari-convnp[xarray]`); numpy, dask and torch otherwise, never napari.
"""
from __future__ import annotations

import numpy as np

from . import qa as qa_bands
from .errors import FillError, MaskError, OptionError
from .fusion import as_date, fit_sample, rank_references
from .options import FillOptions, is_whole
from .stack_fill import MAX_REFERENCES, check_max_references, fill_stack
from .tiling import DEFAULT_TILE, TILE_OVERLAP, blend_window

DIMS = ("time", "band", "y", "x")
DEFAULT_CHUNK = DEFAULT_TILE  # pixels per window side (plus the overlap): about 0.5 GB a window with 10 dates × 6 bands
# pixels each window reaches into its neighbours: one known pixel's pull on the network's output falls to 0.5 % of
# its change at 64 px and 0.1 % at 100 px (measured on a Menindee crop), as far as the fill's own tiles overlap
DEFAULT_OVERLAP = TILE_OVERLAP
FILL_OPTIONS = ("method", "density", "device", "seed", "tile", "precision", "adapt_steps", "biharmonic_weight")


def _xarray():
    try:
        import xarray
    except ImportError:
        raise FillError("fill_stack_dataarray needs xarray: pip install 'napari-convnp[xarray]'") from None
    return xarray


def fill_stack_dataarray(da, *, unusable=None, qa: str | None = None, qa_kind: str | None = None,
                         max_references: int = MAX_REFERENCES, fill_clouds: bool = False, variance: bool = True,
                         chunks=DEFAULT_CHUNK, overlap: int = DEFAULT_OVERLAP, **fill_options):
    """Every date of `da` (dims time, band, y, x in any order; a datetime64 time coordinate) filled from the
    others, lazily: returns (mean, variance) DataArrays backed by Dask (variance None without `variance`), with
    da's coordinates, attributes and dim order, less the quality band. Compute both in one go
    (`dask.compute(mean, variance)`): apart, the fill runs twice.

    NaN pixels (or `_FillValue`/`nodata` of integer bands) are holes. unusable: (time, y, x) bool, True where a
    pixel may never be context (a cloud mask). qa: the band holding a quality band (its name in the band
    coordinate; by default a band named as one, such as qa_pixel or fmask), decoded as `qa.decode` does, its
    kind from its name or `qa_kind`; never filled. fill_clouds, max_references and fill_options (method, device,
    precision, …) as in `stack_fill.fill_stack`. chunks: the window side in pixels (or (y, x)); overlap: pixels
    blended between neighbouring windows. The coordinates `reference_1` … `reference_K` (along time; lazy like
    the fill) hold the dates each date was filled from, best first (NaT where fewer were usable)."""
    xr = _xarray()
    import dask
    import dask.array as dsa

    if not isinstance(da, xr.DataArray):
        raise FillError(f"fill_stack_dataarray takes an xarray.DataArray, not {type(da).__name__}")
    options = _fill_options(fill_options, variance)
    k = check_max_references(max_references)
    if not is_whole(overlap) or overlap < 0:
        raise OptionError(f"overlap must be a whole number of pixels, 0 or more, not {overlap!r}")
    overlap = int(overlap)
    stack = _ordered(da)
    days = _days(stack)
    spectral, quality, kind = _split_quality(stack, qa, qa_kind)
    t, c, h, w = spectral.shape
    sizes = _window_sizes(chunks, (h, w), overlap)
    bands = _float_bands(spectral).rechunk((t, c) + sizes)
    masks = _masks(stack, quality, kind, unusable, (t, h, w))
    masks = [m[:, None].rechunk((t, 1) + sizes) for m in masks]
    rows, cols = fit_sample((h, w))
    chosen = dask.delayed(_rank, pure=True)(bands[:, :, rows, cols], masks[0][:, :, rows, cols], days, k)
    depth = {axis: overlap if len(side) > 1 else 0 for axis, side in zip((2, 3), sizes)}  # none across one chunk
    windows = dsa.map_blocks(
        _fill_window, dsa.overlap.overlap(bands, depth, boundary="none"),
        *(dsa.overlap.overlap(m, depth, boundary="none") for m in masks), chosen, days=days,
        fill_clouds=fill_clouds, variance=variance, options=options, new_axis=0, dtype=np.float32,
        chunks=((1 + variance,),) + dsa.overlap.overlap(bands, depth, boundary="none").chunks)
    result = windows if not overlap else dsa.map_blocks(
        _blend, dsa.overlap.overlap(windows, {a + 1: 2 * d for a, d in depth.items()}, boundary="none"),
        overlap=overlap,
        dtype=np.float32, chunks=((1 + variance,),) + bands.chunks)
    times = dsa.from_delayed(dask.delayed(_reference_times, pure=True)(chosen, stack["time"].values, k),
                             (t, k), stack["time"].dtype)
    filled = "nodata, stripes and clouds" if fill_clouds else "nodata and stripes (clouds kept)"
    outputs = []
    for i, name in enumerate(("mean", "variance")[:1 + variance]):
        out = spectral.copy(data=result[i]).rename(name)
        out.coords.update({f"reference_{r + 1}": ("time", times[:, r]) for r in range(k)})
        out.attrs["convnp_filled"] = filled
        outputs.append(out.transpose(*da.dims, ...))
    return outputs[0], outputs[1] if variance else None


def _fill_options(given: dict, variance: bool) -> dict:
    """The options passed on to `inpaint.fill`, checked now (FillOptions' rules), not when the graph runs."""
    unknown = sorted(set(given) - set(FILL_OPTIONS))
    if unknown:
        raise OptionError(f"fill_stack_dataarray takes no option '{unknown[0]}' (fill options: "
                          f"{', '.join(FILL_OPTIONS)})")
    FillOptions(**given, variance=variance).validate()
    return dict(given)


def _ordered(da):
    """da as (time, band, y, x); a one-line error for dims or a time coordinate a stack cannot have."""
    if sorted(map(str, da.dims)) != sorted(DIMS):
        raise FillError(f"the DataArray has dims {tuple(map(str, da.dims))}; a stack has (time, band, y, x): rename "
                        "them (.rename) or add the missing one (.expand_dims)")
    if "time" not in da.coords:
        raise FillError("the DataArray has no time coordinate: give each date its datetime64 time")
    if not np.issubdtype(da["time"].dtype, np.datetime64):
        raise FillError(f"the time coordinate holds {da['time'].dtype} values, not datetime64 dates")
    return da.transpose(*DIMS)


def _days(stack) -> list:
    if np.isnat(stack["time"].values).any():
        raise FillError("the time coordinate has a missing date (NaT): give every date its time")
    days = [as_date(value) for value in stack["time"].values]
    twice = sorted({d for d in days if days.count(d) > 1})
    if twice:
        raise FillError(f"date {twice[0]} appears twice in the time coordinate: merge the scenes of one day first "
                        "(e.g. .groupby('time.date').first())")
    return days


def _split_quality(stack, qa, qa_kind):
    """(the spectral bands, the quality band or None, its kind): a band named as a quality band is never filled."""
    names = [str(b) for b in stack["band"].values] if "band" in stack.coords else []
    if qa_kind is not None:
        qa_bands.check_kind(qa_kind)
    if qa is None:
        named = [i for i, name in enumerate(names) if qa_bands.kind_from_name(name)]
        if len(named) > 1:
            raise OptionError(f"qa: bands {', '.join(names[i] for i in named)} are all named as quality bands; "
                              "name the one to use")
        index = named[0] if named else None
        if index is None and qa_kind is not None:
            raise OptionError(f"qa_kind '{qa_kind}' was given but no band is named as a quality band; name it with qa")
    else:
        wanted = [i for i, name in enumerate(names) if name.strip().casefold() == str(qa).strip().casefold()]
        if not wanted:
            raise OptionError(f"qa: no band named '{qa}' (the bands: {', '.join(names) or 'no band coordinate'})")
        index = wanted[0]
    if index is None:
        return stack, None, None
    from .stack import _kind

    kind = _kind(qa_bands.kind_from_name(names[index]), qa_kind, f"band '{names[index]}'")
    keep = [i for i, name in enumerate(names) if i != index and not qa_bands.kind_from_name(name)]
    if not keep:
        raise FillError("the DataArray holds only quality bands; there is no spectral band to fill")
    return stack.isel(band=keep), stack.isel(band=index), kind


def _dask(values):
    import dask.array as dsa

    return values if isinstance(values, dsa.Array) else dsa.from_array(np.asarray(values))


def _float_bands(spectral):
    """The bands as float32 Dask, NaN where unknown: an integer stack's `_FillValue` (or `nodata`) too."""
    data = _dask(spectral.data)
    if data.dtype.kind not in "biuf":
        raise FillError(f"the pixels must be numbers, not {data.dtype} values")
    nodata = spectral.attrs.get("_FillValue", spectral.attrs.get("nodata"))
    floats = data.astype(np.float32)
    if data.dtype.kind != "f" and nodata is not None:
        floats = floats.map_blocks(lambda block, raw: np.where(raw == nodata, np.float32(np.nan), block), data,
                                   dtype=np.float32)
    return floats


def _masks(stack, quality, kind, unusable, shape) -> list:
    """[unusable] or [unusable, cloudy], Dask (time, y, x) bool: the user's mask and the decoded quality band."""
    masks = []
    if quality is not None:
        values = _dask(quality.data)
        what = f"quality band '{quality['band'].item()}'"
        masks = [values.map_blocks(lambda v, i=i: qa_bands.decode(v, kind, what)[i], dtype=bool) for i in (0, 1)]
    if unusable is not None:
        given = unusable
        if hasattr(unusable, "dims"):
            if sorted(map(str, unusable.dims)) != ["time", "x", "y"]:
                raise MaskError(f"unusable has dims {tuple(map(str, unusable.dims))}; give (time, y, x)")
            given = unusable.transpose("time", "y", "x").data
        if tuple(np.shape(given)) != shape:
            raise MaskError(f"unusable has shape {tuple(np.shape(given))}, not the stack's (time, y, x) {shape}")
        given = _dask(given).astype(bool)
        masks = [given] if not masks else [masks[0] | given, masks[1] | given]
    return masks or [_dask(np.zeros(shape, bool))]


def _window_sizes(chunks, shape, overlap: int) -> tuple:
    """The chunks along y and x: `chunks` pixels, none narrower than the 2·overlap its neighbours blend over (a
    sliver at the end joins the chunk before it)."""
    sides = (chunks, chunks) if is_whole(chunks) else tuple(chunks) if isinstance(chunks, (tuple, list)) else ()
    if len(sides) != 2 or not all(is_whole(s) and s >= max(1, 2 * overlap) for s in sides):
        raise OptionError(f"chunks must be a window side in pixels (or two: y, x), at least 2 × overlap "
                          f"({2 * overlap}), not {chunks!r}")
    out = []
    for side, length in zip(sides, shape):
        side = int(side)
        sizes = [side] * (length // side) + ([length % side] if length % side else [])
        if len(sizes) > 1 and sizes[-1] < 2 * overlap:
            sizes[-2:] = [sizes[-2] + sizes[-1]]
        out.append(tuple(sizes))
    return tuple(out)


def _rank(bands, unusable, days, k: int) -> dict:
    """Per date, the dates to fill it from (`rank_references` on the stack's subsample)."""
    usable = np.isfinite(bands) & ~unusable
    return {t: rank_references(list(usable), days, t, k, bands=list(bands)) for t in range(len(days))}


def _reference_times(chosen: dict, times: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(times), k), np.datetime64("NaT"), times.dtype)
    for t, picked in chosen.items():
        out[t, :len(picked)] = times[picked]
    return out


def _fill_window(bands, unusable, *rest, days, fill_clouds: bool, variance: bool, options: dict):
    """One window, every date filled from the others (`fill_stack`): (mean[, variance]) × time × band × y × x.
    A date with a band that knows no pixel in the window keeps its known values and leaves its holes NaN; a
    reference that knows no pixel here is left out."""
    cloudy, chosen = (rest[0][:, 0], rest[1]) if len(rest) == 2 else (None, rest[0])
    unusable = unusable[:, 0]
    usable = np.isfinite(bands) & ~unusable[:, None]
    out = np.full((1 + variance,) + bands.shape, np.nan, np.float32)
    out[0] = np.where(usable, bands, np.nan)
    if variance:
        out[1] = np.where(usable, 0, np.nan)
    known_here = usable.any(axis=(2, 3))  # date × band
    targets = [t for t in range(len(bands)) if known_here[t].all()]
    here = {t: [i for i in chosen[t] if known_here[i].any()] for t in targets}
    if targets:
        results = fill_stack(list(bands), list(unusable), days, targets=targets, chosen=here, fill_clouds=fill_clouds,
                             cloudy=None if cloudy is None else list(cloudy), **options)
        for t, result in zip(targets, results):
            out[0, t] = result.fill.mean
            if variance:
                out[1, t] = result.fill.variance
    return out


def _axis_pieces(length: int, overlap: int, first: bool, last: bool):
    """Along one axis of a blend block (the window, with 2·overlap of each neighbour's window either side):
    [(source slice, slice of the window it lands on, blend weight)] and the window's own core."""
    left, right = (0 if first else 2 * overlap), (0 if last else 2 * overlap)
    own = length - left - right
    pieces = [(slice(left, left + own), slice(0, own), blend_window(own, 2 * overlap, first, last))]
    if not first:
        pieces.append((slice(0, left), slice(0, left), blend_window(left, left, True, False)))
    if not last:
        pieces.append((slice(left + own, length), slice(own - right, own), blend_window(right, right, False, True)))
    return pieces, slice(0 if first else overlap, own - (0 if last else overlap))


def _blend(block, *, overlap: int, block_info=None):
    """A window's core with its neighbours' Gaussians blended in (a mixture, as the tiler blends tiles), in float64
    about the window's own mean: where every window kept a known pixel, its value and variance 0 come out exact."""
    where, count = block_info[0]["chunk-location"], block_info[0]["num-chunks"]
    rows, core_y = _axis_pieces(block.shape[3], overlap, where[3] == 0, where[3] == count[3] - 1)
    cols, core_x = _axis_pieces(block.shape[4], overlap, where[4] == 0, where[4] == count[4] - 1)
    own_y, own_x = rows[0][0], cols[0][0]
    out = np.empty(block.shape[:3] + (core_y.stop - core_y.start, core_x.stop - core_x.start), np.float32)
    for t in range(block.shape[1]):
        for c in range(block.shape[2]):
            base = np.nan_to_num(block[0, t, c, own_y, own_x].astype(np.float64))
            sums = np.zeros((4,) + base.shape)  # weight, weight × shift, weight × shift², weight × variance
            for src_y, dst_y, weight_y in rows:
                for src_x, dst_x, weight_x in cols:
                    mean = block[0, t, c, src_y, src_x]
                    known = np.isfinite(mean)
                    weight = np.where(known, np.outer(weight_y, weight_x), 0.0)
                    shift = np.where(known, mean - base[dst_y, dst_x], 0.0)
                    parts = [weight, weight * shift, weight * shift ** 2]
                    if len(block) > 1:
                        parts.append(weight * np.where(known, block[1, t, c, src_y, src_x], 0.0))
                    for total, part in zip(sums, parts):
                        total[dst_y, dst_x] += part
            with np.errstate(invalid="ignore", divide="ignore"):
                weight = np.where(sums[0] > 0, sums[0], np.nan)
                shift = sums[1] / weight
                out[0, t, c] = (base + shift)[core_y, core_x]
                if len(block) > 1:
                    spread = np.maximum(sums[2] / weight - shift ** 2, 0)
                    out[1, t, c] = (sums[3] / weight + spread)[core_y, core_x]
    return out
