"""What the process can ask of the machine: free memory (to fail early with the sizes named) and its umask
(to create files as a plain open() would), from Linux /proc where it can."""
from __future__ import annotations

import os

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
