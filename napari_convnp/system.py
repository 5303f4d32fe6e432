"""What the process can ask of the machine: free memory (to fail early with the sizes named) and its umask
(to create files as a plain open() would), from Linux /proc where it can; and glibc's allocator set for arrays."""
from __future__ import annotations

import ctypes
import functools
import os
import threading
from contextlib import contextmanager

from .errors import SceneError


def _proc_field(path: str, key: str) -> str | None:
    """The value after `key` in a Linux /proc file ('MemAvailable:' in /proc/meminfo), or None."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key):
                    return line.split()[1]
    except OSError:
        pass
    return None


def available_memory() -> int:
    """Bytes of memory the system can still hand out (MemAvailable), or a huge number if unknown."""
    kib = _proc_field("/proc/meminfo", "MemAvailable:")
    return int(kib) * 1024 if kib is not None else 1 << 62


def check_memory(needed: int, what: str) -> None:
    """Fail early, with the sizes named, instead of being killed half-way by the kernel."""
    available = available_memory()
    if needed > available:
        raise SceneError(f"{what} needs about {needed / 2**30:.1f} GiB of memory but only "
                         f"{available / 2**30:.1f} GiB is free; use a smaller crop or a machine with more memory")


def umask() -> int:
    """The process's umask, read without changing it where /proc tells it (another thread may create files)."""
    value = _proc_field("/proc/self/status", "Umask:")
    try:
        if value is not None:
            return int(value, 8)
    except ValueError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# glibc adapts its mmap threshold (up to 32 MiB) and its trim threshold (twice that) as large blocks are freed, so a
# fill's many scene-sized temporaries are reused from the heap; any of these variables turns that off (Dask sets
# MALLOC_TRIM_THRESHOLD_ in its workers), and every array above 128 KiB is then mapped fresh and page-faulted in: a
# fill in a Dask worker took 2.3x as long (benchmarks/stack.md, *Cost*)
FIXED_MALLOC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)
# within a worker's task: half of what glibc's own adaptation reaches (32 MiB): as fast for a stack's target (1024²
# x 4 dates: 0.82-1.23 x N fills either way), 0.23 GB less for a 4096² one (1.93 GB against 2.16 GB for the tree);
# and glibc's defaults where a variable does not say
FOR_ARRAYS = {M_MMAP_THRESHOLD: 16 << 20, M_TRIM_THRESHOLD: 32 << 20}
DEFAULTS = {M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", 128 << 10),
            M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", 128 << 10)}


@functools.cache
def _glibc():
    """The C library, where it is glibc (loaded once: the fusion asks for it on every block)."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl): the variables mean nothing there
        return None


def _configured(parameter: int) -> int:
    name, default = DEFAULTS[parameter]
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


_holders = [0]  # tasks now inside allocator_for_arrays (a worker may run several at once, in threads)
_holders_lock = threading.Lock()


@contextmanager
def allocator_for_arrays():
    """Within: freed arrays up to 16 MiB stay in glibc's heap for the next ones, as in a plain process, where a
    variable above fixed the allocator (a Dask worker); once the last task inside has left, the process's own
    settings again."""
    libc = _glibc() if any(name in os.environ for name in FIXED_MALLOC_VARIABLES) else None
    if libc is None:
        yield
        return
    with _holders_lock:
        _holders[0] += 1
        for parameter, value in FOR_ARRAYS.items():
            libc.mallopt(parameter, value)
    try:
        yield
    finally:
        with _holders_lock:
            _holders[0] -= 1
            if not _holders[0]:
                for parameter in FOR_ARRAYS:
                    libc.mallopt(parameter, _configured(parameter))


def release_free_memory() -> None:
    """Give glibc's free heap pages back to the kernel: between the row blocks of a loop whose temporaries come from
    the heap, its resident memory stays the blocks' live arrays, not what they left behind."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
