"""padim_repro.memory: the malloc policy that keeps freed memory for reuse (speed only, no result changes)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from padim_repro import memory

GLIBC = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's")  # fmt: skip


@GLIBC
def test_glibc_takes_every_setting() -> None:
    _clear()
    assert memory.keep_freed_memory() is True


def _clear() -> None:
    memory._libc.cache_clear()
    memory.keep_freed_memory.cache_clear()


def test_elsewhere_it_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear()
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    try:
        assert memory.keep_freed_memory() is False
        with memory.reuse_freed_memory():
            pass
    finally:
        _clear()


_PROBE = """
import ctypes, importlib.util, sys
spec = importlib.util.spec_from_file_location("memory", sys.argv[2])  # the module alone: no torch import
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                               "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.mallinfo2.restype, libc.free.argtypes = ctypes.c_void_p, Info, [ctypes.c_void_p]
if sys.argv[1] == "loop":  # 100 blocks of 1 MB freed inside the block: free heap bytes inside, then after it
    with module.reuse_freed_memory():
        blocks = [libc.malloc(2**20) for _ in range(100)]
        for b in blocks:
            libc.free(b)
        print(libc.mallinfo2().fordblks)
    print(libc.mallinfo2().fordblks)
    sys.exit()
if sys.argv[1] == "policy":
    module.keep_freed_memory()
libc.malloc(20 * 2**20)
print(libc.mallinfo2().hblkhd)  # bytes malloc serves from their own mappings
"""


@GLIBC
def test_a_20_mb_block_comes_from_the_heap_instead_of_a_fresh_mapping() -> None:
    """In a fresh process glibc maps a 20 MB block on its own (and unmaps it when freed); under the policy the heap
    serves it, so its pages are reused after a free."""

    [default], [policy] = _probe("default"), _probe("policy")
    assert default >= 20 * 2**20 > policy


@GLIBC
def test_the_loop_keeps_freed_memory_and_hands_it_back_at_its_end() -> None:
    inside, after = _probe("loop")
    assert inside >= 100 * 2**20 > 10 * 2**20 > after


def _probe(mode: str) -> list[int]:
    args = [sys.executable, "-c", _PROBE, mode, memory.__file__]
    return [int(line) for line in subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()]
