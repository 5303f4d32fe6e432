"""Tiled inference: the network run over overlapping tiles of a scene and their Gaussians blended, so memory is
bounded by a tile and a row of tiles, whatever the scene's size. Used by the fill and (the autocast) by training and
adaptation.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .errors import Cancelled

DEFAULT_TILE = 512  # pixels per tile side on the CPU; the GPU takes larger tiles
TILE_OVERLAP = 64  # pixels blended between neighbouring tiles


def blend_window(size: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weight: a raised-cosine ramp over the overlap, flat inside and at scene edges."""
    w = np.ones(size, np.float32)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
    if not at_start:
        w[:overlap] = ramp
    if not at_end:
        w[-overlap:] = ramp[::-1]
    return w


def tile_size(tile: int, multiple: int) -> tuple[int, int]:
    """The tile side and overlap actually used: multiples of the UNet's, so tiles pool on one grid."""
    tile = max(4 * multiple, tile // multiple * multiple)
    return tile, max(multiple, min(TILE_OVERLAP, tile // 4) // multiple * multiple)


def tile_grid(length: int, tile: int, multiple: int) -> list[int]:
    """Where the tiles along one axis start, as the fill cuts them."""
    return axis_tiles(length, *tile_size(tile, multiple), multiple)[1]


SLIVER_STRETCH = 1.125  # how much longer tiles may grow to save a row or column of tiles


def axis_tiles(length: int, tile: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """The tile length along one axis and where the tiles start. When the last tile would add less than a
    quarter tile of new pixels (1024 px in 512-px tiles: 512 + 512 + a 128-px sliver), the tiles grow by up to
    1/8 instead and one fewer covers the axis (two of 544 px): less work, a little more memory per tile."""
    starts = tile_starts(length, tile, overlap)
    if len(starts) > 1 and length - starts[-1] - overlap < tile // 4:
        fewer = len(starts) - 1
        longer = -(-(length + (fewer - 1) * overlap) // fewer)
        longer = -(-longer // multiple) * multiple
        if longer <= tile * SLIVER_STRETCH:
            return longer, tile_starts(length, longer, overlap)
    return tile, starts


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts a fixed step apart (a multiple of the UNet's, when tile and overlap are), so
    every tile pools on the same grid as the whole scene would; the last tile is cut at the edge."""
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + tile - overlap)
    return starts


def predict_rows(model, bands, context, offsets, scales, tile, device, progress=None, cancelled=None,
                 precision="float32", reference=None, gaps=None):
    """Run the model over overlapping tiles, row of tiles by row of tiles, and blend them (mixture of the
    tiles' Gaussians); yields (first row, mean, variance) for bands of rows, C×n×W float32 tensors on `device`
    in the input's units, top to bottom, each as soon as no later tile touches it.

    reference: None, or (normalised reference values, where known), both C×H×W. gaps: the pixels to fill
    (C×H×W bool) or None; a tile with none of them anywhere in it (overlap included) runs no network: every
    pixel it touches keeps its known value (or stays nodata) after `fill`, so it enters the blend as its
    normalised context values with variance 0, with its usual weight.

    Tiles are normalised with the scene's per-band statistics (offsets, scales) as they are cut, so
    memory for the network is bounded by the tile size, and the blending buffers by a row of tiles.
    """
    import torch
    import torch.nn.functional as F

    c, h, w = bands.shape
    multiple = model.multiple
    tile, overlap = tile_size(tile, multiple)
    tile_h, rows = axis_tiles(h, tile, overlap, multiple)
    tile_w, cols = axis_tiles(w, tile, overlap, multiple)
    total, done = len(rows) * len(cols), 0
    # Normalising and blending run where the network does, in torch: on a GPU they would otherwise take most
    # of the time (numpy, one CPU core), and on a CPU torch uses every core.
    on = functools.partial(torch.as_tensor, device=device)
    offsets, scales = on(offsets, dtype=torch.float32)[:, None, None], on(scales, dtype=torch.float32)[:, None, None]
    carry = None  # the blend so far of the rows the next row of tiles shares with this one
    for i, r in enumerate(rows):
        th = min(tile_h, h - r)
        # Accumulators for this row of tiles only: weighted means and second moments (mixture variance).
        acc_mean = torch.zeros((c, th, w), device=device)
        acc_sq = torch.zeros((c, th, w), device=device)
        acc_w = torch.zeros((th, w), device=device)
        if carry is not None:
            n = carry[2].shape[0]
            acc_mean[:, :n], acc_sq[:, :n], acc_w[:n] = carry
        for col in cols:
            if cancelled and cancelled():
                raise Cancelled()
            tw = min(tile_w, w - col)
            ph, pw = math.ceil(th / multiple) * multiple, math.ceil(tw / multiple) * multiple
            window = (slice(None), slice(r, r + th), slice(col, col + tw))
            known = on(context[window])
            values = torch.where(known, (on(np.asarray(bands[window], np.float32)) - offsets) / scales, 0)
            if gaps is not None and not gaps[window].any():
                mean, var = values, torch.zeros_like(values)  # nothing to fill here: no network call
            else:
                # Pad to the UNet's multiple with "no context": the padded edge then falls where the whole
                # scene's would, so a scene gives the same answer however it is tiled.
                pad = (0, pw - tw, 0, ph - th)
                inputs = [values, known.float(), *(on(part[window]).float() for part in reference or ())]
                inputs = [F.pad(x, pad)[:, None] for x in inputs]
                with torch.inference_mode(), autocast(device, precision):
                    mean, var = model(*inputs[:2], c, *inputs[2:])
                mean, var = mean[:, 0, :th, :tw].float(), var[:, 0, :th, :tw].float()
            weight = on(np.outer(blend_window(th, overlap, r == 0, r + th >= h),
                                 blend_window(tw, overlap, col == 0, col + tw >= w)))
            part = (slice(None), slice(None), slice(col, col + tw))
            acc_mean[part] += weight * mean
            acc_sq[part] += weight * (var + mean ** 2)
            acc_w[part[1:]] += weight
            done += 1
            if progress:
                progress(done, total)
        # Rows above the next row of tiles are final; the rest waits for it.
        final = (rows[i + 1] if i + 1 < len(rows) else h) - r
        carry = (acc_mean[:, final:].clone(), acc_sq[:, final:].clone(), acc_w[final:].clone())
        acc_mean, acc_sq, acc_w = acc_mean[:, :final], acc_sq[:, :final], acc_w[:final]
        acc_mean /= acc_w
        acc_sq /= acc_w
        acc_sq -= acc_mean ** 2
        acc_sq.clamp_(min=1e-12)
        acc_sq *= scales ** 2
        acc_mean *= scales
        acc_mean += offsets
        yield r, acc_mean, acc_sq
        del acc_mean, acc_sq, acc_w  # freed before the next row of tiles allocates its own


def autocast(device: str, precision: str):
    """The context the network runs in: nothing for float32, torch's autocast for bfloat16."""
    import contextlib

    import torch

    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
