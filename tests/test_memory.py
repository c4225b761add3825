"""padim_repro.memory: the malloc policies (freed memory kept for reuse in loops, handed back promptly elsewhere;
speed and memory only, no result changes)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from padim_repro import memory

GLIBC = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's")  # fmt: skip


@GLIBC
def test_glibc_takes_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_current", None)
    assert memory.set_policy(memory.KEEP) is True and memory._current is memory.KEEP
    assert memory.set_policy(memory.PROMPT) is True and memory._current is memory.PROMPT


def test_elsewhere_it_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    memory._libc.cache_clear()
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    monkeypatch.setattr(memory, "_current", None)
    try:
        assert memory.set_policy(memory.KEEP) is False and memory._current is None
        with memory.reuse_freed_memory():
            pass
        assert memory._current is None
    finally:
        memory._libc.cache_clear()


@pytest.mark.parametrize("before", [None, "KEEP", "PROMPT"])
def test_the_loop_sets_back_the_policy_in_force_before_it(monkeypatch: pytest.MonkeyPatch, before: str | None) -> None:
    """Inside the block KEEP; after it the policy set before (glibc's own cannot be set back: KEEP stays)."""
    if memory._libc() is None:
        pytest.skip("mallopt is glibc's")
    policy = None if before is None else getattr(memory, before)
    monkeypatch.setattr(memory, "_current", policy)
    try:
        with memory.reuse_freed_memory():
            assert memory._current is memory.KEEP
        assert memory._current is (memory.KEEP if policy is None else policy)
    finally:
        memory.set_policy(memory.KEEP)  # the test process's malloc as the package leaves it after any fit


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
if sys.argv[1] == "loop":  # 100 blocks of 1 MB freed inside the loop: free heap bytes inside it, then after it
    module.set_policy(module.PROMPT)  # as the command line does
    with module.reuse_freed_memory():
        blocks = [libc.malloc(2**20) for _ in range(100)]
        for b in blocks:
            libc.free(b)
        print(libc.mallinfo2().fordblks)
    print(libc.mallinfo2().fordblks)
    sys.exit()
if sys.argv[1] in ("keep", "prompt"):
    module.set_policy(getattr(module, sys.argv[1].upper()))
libc.malloc(20 * 2**20)
print(libc.mallinfo2().hblkhd)  # bytes malloc serves from their own mappings
"""


@GLIBC
def test_a_20_mb_block_comes_from_the_heap_only_under_keep() -> None:
    """In a fresh process glibc maps a 20 MB block on its own (and unmaps it when freed), as under PROMPT; under
    KEEP the heap serves it, so its pages are reused after a free."""
    [default], [keep], [prompt] = _probe("default"), _probe("keep"), _probe("prompt")
    assert default >= 20 * 2**20 > keep
    assert prompt >= 20 * 2**20


@GLIBC
def test_the_loop_keeps_freed_memory_and_hands_it_back_at_its_end_under_prompt() -> None:
    inside, after = _probe("loop")
    assert inside >= 100 * 2**20 > 10 * 2**20 > after


def _probe(mode: str) -> list[int]:
    args = [sys.executable, "-c", _PROBE, mode, memory.__file__]
    return [int(line) for line in subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()]
