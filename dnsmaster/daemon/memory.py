"""How the daemon's memory goes back to the system between builds (glibc's malloc).

A rebuild at a million lines needs some 130 MB for a few seconds (the build's
texts and tables, then a delta's line hashes), and the daemon then rests with
under 60 MB in use. Three things keep freed memory resident in glibc unless told:

- each thread that allocates gets an arena of its own, and the builds and deltas
  run in worker threads: long-lived objects made there (the Builder's compiled
  sources) pin pages of an arena whose other pages the next build frees and
  refills elsewhere (measured at 300,000 lines: 121 MB resident after four
  rebuilds, 81 MB with one arena). The daemon runs one build at a time, so one
  arena's lock costs nothing;
- the mmap threshold moves: once a large buffer (a data text, a 1 MiB piece of it)
  is freed, glibc raises the size from which it maps buffers apart, up to 32 MiB,
  so the next ones come from the heap, where an array that grows by reallocation
  is copied again and again and leaves holes behind. A fixed threshold keeps every
  buffer from :data:`MMAP_THRESHOLD` on in a mapping of its own, given back whole
  when it is freed (and grown in place by ``mremap``). Measured at 1M lines: a
  delta's high-water mark 138 MB instead of 161-205 MB after a rebuild;
- freed heap pages stay resident until ``malloc_trim``: :func:`release` after each
  build and after each delta.

Only glibc has these; elsewhere the functions do nothing.
"""

from __future__ import annotations

import ctypes
import functools

__all__ = ["MMAP_THRESHOLD", "release", "tune"]

#: Buffers of this size or more get a mapping of their own (mallopt's M_MMAP_THRESHOLD).
MMAP_THRESHOLD = 1 << 20

# mallopt(3)'s parameters
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim  # noqa: B018  (glibc has it; others need not)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune() -> bool:
    """One arena for every thread, and a fixed mmap threshold: call it before the
    first worker thread allocates. Whether glibc took both."""
    libc = _libc()
    if libc is None:
        return False
    arenas = libc.mallopt(_M_ARENA_MAX, 1)
    return bool(arenas and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release() -> None:
    """Give what a build or a push freed back to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
