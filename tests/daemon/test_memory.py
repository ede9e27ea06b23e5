"""The daemon's malloc settings: accepted by glibc, and freed heap given back."""

from __future__ import annotations

import platform

import pytest

from dnsmaster.daemon import memory

GLIBC = platform.libc_ver()[0] == "glibc"


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not GLIBC, reason="mallopt and malloc_trim are glibc's")
def test_tune_is_accepted() -> None:
    # mallopt says 0 for a parameter it does not know: the numbers must be glibc's.
    assert memory.tune()


@pytest.mark.skipif(not GLIBC, reason="mallopt and malloc_trim are glibc's")
def test_release_gives_freed_heap_back() -> None:
    memory.tune()
    # 48 MB of buffers below the mmap threshold come from the heap; one kept after
    # them stops glibc from trimming the top of the heap on its own when they go.
    blocks = [bytearray(b"x" * 4000) for _ in range(12_000)]
    pin = bytearray(b"x" * 4000)
    del blocks
    before = _rss_kib()
    memory.release()
    assert before - _rss_kib() > 24_000
    del pin
