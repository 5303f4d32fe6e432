"""Lazy views of a scene's pixels: C×H×W arrays computed window by window as they are indexed, so that a
file-to-file fill holds a tile, not a scene. numpy only."""
from __future__ import annotations

import numpy as np

# Pixel types whose every value float32 holds exactly; other inputs need float64 (or their own type) out.
EXACT_IN_FLOAT32 = frozenset(np.dtype(t).str for t in ("b1", "u1", "i1", "u2", "i2", "f2", "f4"))


class BandWindows:
    """A C×H×W array computed window by window as it is indexed (`x[b]`, `x[:, rows, cols]`), for what the fill
    only ever needs a band or a tile of; iteration gives the bands, `np.asarray` the whole. Subclasses set
    `shape` and define `__getitem__`."""

    shape: tuple[int, int, int]

    def __getitem__(self, index) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self):
        return (self[b] for b in range(len(self)))

    def __array__(self, dtype=None, copy=None):
        return self[...] if dtype is None else self[...].astype(dtype)


class FloatView(BandWindows):
    """A scene's integer pixels as float32 (NaN = nodata), converted window by window as they are indexed:
    a 16-bit scene then takes half the memory of its float32 copy (670 MB less for a full Landsat scene)."""

    dtype = np.dtype(np.float32)

    def __init__(self, raw: np.ndarray, nodata: np.ndarray):
        self.raw, self.nodata = raw, nodata
        self.shape, self.ndim, self.size = raw.shape, raw.ndim, raw.size
        self._any_nodata = bool(nodata.any())

    def __getitem__(self, index) -> np.ndarray:
        values = np.asarray(self.raw[index], np.float32)
        if self._any_nodata:
            values[self.nodata[index]] = np.nan
        return values



def basic_index(index, shape) -> tuple:
    """(bands, rows, cols) of an index into a C×H×W array made of ints, slices and at most one Ellipsis."""
    index = index if isinstance(index, tuple) else (index,)
    for i in index:
        if not (i is Ellipsis or isinstance(i, (int, np.integer, slice))):
            raise IndexError(f"TiffPixels takes ints, slices and ..., not {type(i).__name__}")
    if any(i is Ellipsis for i in index):
        at = next(k for k, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1:]
    index = tuple(int(i) if isinstance(i, np.integer) else i for i in index)
    return index + (slice(None),) * (len(shape) - len(index))


def index_span(indices) -> tuple[int, int]:
    """First and one past the last of an int or a step-1 range."""
    if isinstance(indices, int):
        return indices, indices + 1
    return (indices.start, indices.stop) if len(indices) else (0, 0)

