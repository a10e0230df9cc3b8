"""Keep freed tensor buffers in the process instead of returning them to the OS every step.

glibc serves large allocations with mmap and unmaps them on free, so each rollout step page-faults
its activation buffers in again; measured here, page faults dominated a naive conv rollout. Setting
``M_MMAP_MAX=0`` and a huge ``M_TRIM_THRESHOLD`` (what ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=...`` do at start-up) keeps the buffers on the heap for reuse. Bits are
unchanged: only where memory comes from changes. ``benchmarks/bench_rollout.py`` measures the gain.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the setting once per process; returns False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
