"""The process's malloc policy: freed memory kept for reuse inside batch loops, handed back promptly elsewhere.

Batch after batch, the backbone and the Gaussian step allocate and free temporaries of the same few sizes (tens of
MB). By default glibc's malloc serves the larger ones from fresh mappings and trims the heap whenever its top is free,
so every batch touches new pages, and each new 4 KiB page costs a page fault in which the kernel zeroes it. On the
2-core machine of ``make bench`` that kept the backbone inside ``fit`` and ``predict`` about 20% slower than the
same backbone run alone. Inside :func:`reuse_freed_memory` glibc keeps what was freed for reuse (:data:`KEEP`);
outside it, the policy in force before applies again. The command line sets :data:`PROMPT` for the whole process, so
that the steps between the loops (the metrics and their bootstrap) hand large freed arrays back at once and the
run's peak RSS counts only what is alive. Neither changes any result.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: mallopt parameters of glibc's malloc.h.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Inside batch loops: allocations up to 32 MiB (glibc's default largest mmap threshold) come from the heap, and the
#: heap is trimmed only when 128 MiB at its top is free. Of the trim thresholds tried on R18-Rd100 (64 MiB, 128 MiB,
#: 256 MiB, 1 GiB), 128 MiB gave the fastest ``run`` (16 s against 26 s without the policy); a larger one only kept
#: more memory.
KEEP = {M_MMAP_THRESHOLD: 2**25, M_TRIM_THRESHOLD: 2**27}
#: Elsewhere, for the command line: blocks over 1 MiB get their own mapping, unmapped when freed, and the heap is
#: trimmed once 1 MiB at its top is free (by default glibc raises its mmap threshold as large blocks are freed and then
#: keeps later ones in the heap, so a run's peak RSS would count temporaries already freed).
PROMPT = {M_MMAP_THRESHOLD: 2**20, M_TRIM_THRESHOLD: 2**20}

#: The policy set last (None: glibc's own, adaptive thresholds, which cannot be set back once changed).
_current: dict[int, int] | None = None


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


def set_policy(policy: dict[int, int]) -> bool:
    """Set glibc's malloc thresholds to ``policy`` (:data:`KEEP` or :data:`PROMPT`) for the whole process; True if
    every setting took effect (False where glibc is absent)."""
    global _current
    libc = _libc()
    if libc is None:
        return False
    _current = policy
    return all([libc.mallopt(param, value) == 1 for param, value in policy.items()])


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Within the block, freed memory is kept for reuse (:data:`KEEP`). At its end the policy in force before it is
    set again, and under :data:`PROMPT` the heap's free memory is handed back (``malloc_trim``); glibc's own policy
    cannot be restored, so without one set before, :data:`KEEP` stays. A no-op where glibc is absent."""
    before = _current
    set_policy(KEEP)
    try:
        yield
    finally:
        if before is not None and before is not KEEP:
            set_policy(before)
            if before is PROMPT:
                _libc().malloc_trim(0)
