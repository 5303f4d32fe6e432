"""The fill's options in one place: the registries (methods, precisions, pixel types, devices) and one frozen
`FillOptions` whose `validate()` is the only check of their values.

The command line takes its choices from these registries, `fileio`, `batch` and the widget build a `FillOptions`,
and `inpaint.fill` checks its keyword arguments through it: a new method or precision is added here once.
Imports neither torch nor napari (the device rule imports torch only when a device is resolved).
"""
from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, fields, replace

from . import baselines
from .errors import OptionError

METHODS = ("convnp", *baselines.METHODS, *baselines.TWO_DATE_METHODS)
NEEDS_REFERENCE = frozenset(baselines.TWO_DATE_METHODS)  # methods that only work with another date
USES_REFERENCE = NEEDS_REFERENCE | {"convnp"}  # methods that do something with another date
VARIANCE_METHODS = frozenset({"convnp"})  # the methods whose fill comes with a predictive variance
PRECISIONS = ("float32", "bfloat16")
DTYPES = ("auto", "float32", "float64", "source")
DEVICES = ("auto", "cpu", "cuda")  # and cuda:N, the N-th GPU
DEVICE_RULE = re.compile(r"auto|cpu|cuda(:\d+)?")
MAX_ADAPT_STEPS = 100_000  # far beyond any useful adaptation (60 is the default); more would run for days


def is_number(value) -> bool:
    """A finite real number, not a bool (True is no density)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def is_whole(value) -> bool:
    """A whole number (an int of any size, or a float without a fraction), not a bool."""
    if isinstance(value, numbers.Integral):
        return not isinstance(value, bool)
    return is_number(value) and float(value) == int(value)


def is_path(value) -> bool:
    """A file name as the package takes one: str or os.PathLike (not bytes, None, a number or a list)."""
    return isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes)


def check_path(value, argument: str, error=OptionError):
    """`value` as given if it is a file name, else `error` naming the argument."""
    if not is_path(value) or not os.fspath(value):
        raise error(f"{argument} must be a file name (str or pathlib.Path), not {_kind(value)}")
    return value


def check_callable(value, argument: str, error=OptionError) -> None:
    """None or a callable; anything else fails now, not after minutes of work."""
    if value is not None and not callable(value):
        raise error(f"{argument} must be a function (or None), not {_kind(value)}")


def _kind(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def check_device(device) -> str:
    """The device's spelling (auto, cpu, cuda or cuda:N); whether the GPU exists is `resolve_device`'s question."""
    if not isinstance(device, str) or not DEVICE_RULE.fullmatch(device):
        raise OptionError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N (the N-th GPU)")
    return device


def resolve_device(device: str = "auto") -> str:
    """'auto' picks CUDA when torch sees a GPU, else the CPU; asking for a missing GPU is an error."""
    check_device(device)
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise OptionError(f"device '{device}' was asked for, but torch finds no CUDA GPU here (use 'auto' or "
                              "'cpu')")
        if int(device.partition(":")[2] or 0) >= count:
            raise OptionError(f"device '{device}' was asked for, but torch finds {count} CUDA GPU(s): cuda:0 to "
                              f"cuda:{count - 1}")
    return device


@dataclass(frozen=True)
class FillOptions:
    """How one scene is filled. `validate()` returns the same options with numbers as int/float, or raises
    OptionError naming the first value that cannot work; `inpaint.fill` trusts a validated one."""

    method: str = "convnp"
    density: float = 1.0
    device: str = "auto"
    seed: int = 0
    tile: int | None = None
    precision: str = "float32"
    dtype: str = "auto"
    references: tuple = ()  # other dates (paths, Scenes or arrays); only their number matters here
    adapt_steps: int = 0
    biharmonic_weight: float | None = None
    variance: bool = False  # a predictive variance is asked for

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def validate(self) -> FillOptions:
        method = self.method
        if method not in METHODS:
            raise _refuse("method", f"unknown method '{method}': choose one of {', '.join(METHODS)}")
        if self.precision not in PRECISIONS:
            raise _refuse("precision", f"unknown precision '{self.precision}': use {' or '.join(PRECISIONS)}")
        if self.dtype not in DTYPES:
            raise _refuse("dtype", f"dtype must be one of {', '.join(DTYPES)}, not '{self.dtype}'")
        try:
            check_device(self.device)
        except OptionError as err:
            raise _refuse("device", str(err)) from None
        if not is_number(self.density) or not 0 < float(self.density) <= 1:
            raise _refuse("density", f"density must be in (0, 1] (the fraction of known pixels used), "
                                     f"not {self.density!r}")
        if not is_whole(self.seed) or self.seed < 0:
            raise _refuse("seed", f"seed must be a whole number, 0 or more, not {self.seed!r}")
        if self.tile is not None and (not is_whole(self.tile) or self.tile < 1):
            raise _refuse("tile", f"tile must be a positive number of pixels, not {self.tile!r}")
        steps = self.adapt_steps
        if not is_whole(steps) or not 0 <= steps <= MAX_ADAPT_STEPS:
            raise _refuse("adapt_steps", f"adaptation steps must be a whole number from 0 to {MAX_ADAPT_STEPS}, "
                                         f"not {steps!r}")
        if steps and method != "convnp":
            raise _refuse("adapt_steps", f"adaptation fine-tunes the ConvNP; it does nothing for method '{method}'")
        weight = self.biharmonic_weight
        if weight is not None:
            if not is_number(weight) or not 0 <= float(weight) <= 1:
                raise _refuse("biharmonic_weight", f"the biharmonic weight must be a number in [0, 1] (0 = the "
                                                   f"network alone), not {weight}")
            if method != "convnp":
                raise _refuse("biharmonic_weight", f"the biharmonic weight blends the ConvNP's mean; method "
                                                   f"'{method}' has none")
        if self.variance and method not in VARIANCE_METHODS:
            raise _refuse("variance", f"method '{method}' gives no variance; use method convnp for a variance")
        if method in NEEDS_REFERENCE and not self.references:
            raise _refuse("references", f"method '{method}' fills from another date: give a reference scene")
        if self.references and method not in USES_REFERENCE:
            raise _refuse("references", f"method '{method}' fills from the scene alone and would ignore the "
                                        f"reference; use one of {', '.join(m for m in METHODS if m in USES_REFERENCE)}")
        return replace(self, density=float(self.density), seed=int(self.seed),
                       tile=None if self.tile is None else int(self.tile), adapt_steps=int(steps),
                       biharmonic_weight=None if weight is None else float(weight), variance=bool(self.variance))


def _refuse(option: str, message: str) -> OptionError:
    """The error for one option; `option` (a FillOptions field) lets a caller name it as its users spell it."""
    err = OptionError(message)
    err.option = option
    return err
