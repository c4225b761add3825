"""The process's memory policy in batch loops: freed memory kept for reuse, then handed back at the loop's end.

Batch after batch, the backbone and the Gaussian step allocate and free temporaries of the same few sizes (tens of
MB). By default glibc's malloc serves the larger ones from fresh mappings and trims the heap whenever its top is free,
so every batch touches new pages, and each new 4 KiB page costs a page fault in which the kernel zeroes it. On the
2-core machine of ``make bench`` that kept the backbone inside ``fit`` and ``predict`` about 20% slower than the
same backbone run alone. :func:`reuse_freed_memory` sets glibc to reuse what was freed while a loop runs, and hands
the free memory back to the kernel when it ends, so that what follows (the metrics, say) does not stack its own peak
on top of memory the loop no longer uses. It changes no result.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: mallopt parameters (glibc's malloc.h) and the values set: allocations up to 32 MiB (glibc's default largest mmap
#: threshold) come from the heap, and the heap is trimmed only when 128 MiB at its top is free. Of the values tried on
#: R18-Rd100 (trim at 64 MiB, 128 MiB, 256 MiB, 1 GiB), 128 MiB gave the fastest ``run`` (16 s against 26 s without
#: the policy); a larger one only kept more memory.
_SETTINGS = {"M_TRIM_THRESHOLD": (-1, 2**27), "M_MMAP_THRESHOLD": (-3, 2**25)}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None off Linux or under another C library (e.g. musl, which has no ``mallopt``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's malloc (once per process) to keep freed memory for reuse; True if every setting took effect."""
    libc = _libc()
    return libc is not None and all([libc.mallopt(param, value) == 1 for param, value in _SETTINGS.values()])


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Within the block, freed memory is kept for reuse (:func:`keep_freed_memory`); at its end, the free memory of
    the heap is handed back to the kernel (``malloc_trim``). A no-op where glibc is absent."""
    keep_freed_memory()
    try:
        yield
    finally:
        libc = _libc()
        if libc is not None:
            libc.malloc_trim(0)
