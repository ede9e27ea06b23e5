"""The master's side of a delta push, from line hashes read in chunks.

:func:`dnsmaster.core.delta.make` splits two whole data texts into lines: at 1M
lines that is two million bytes objects and a restamped copy of the base, some
300 MB for a moment. Here each text is read in pieces of a quarter megabyte
(:class:`Text`: bytes in memory, or a file read with ``pread``), and only a 64-bit
hash and the start offset of each line are kept (:class:`Lines`: 12 bytes a
line, 16 from 4 GiB on). The operations are the very ones
:func:`~dnsmaster.core.delta.make` finds (the same walk, on hashes instead of
lines), so the stream is the same bytes; an insert's text is read from the new
data once the operations are known.

Two different lines with the same hash would make a copy of the wrong line; the
receiver checks the result's length and sha256 against the trailer and refuses it,
and the full data follows (at 1M lines the chance is about one in 10**7 per
push, with Python's 64-bit SipHash).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

from dnsmaster.core import delta as deltas
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.stream import Trailer

__all__ = ["CHUNK", "InMemory", "Lines", "Span", "Text", "chunks", "diff", "line_hashes", "make"]

#: How much of a text is read at once: each piece is copied a few times (joined to
#: the line cut from the piece before, cut after its last newline, restamped), and
#: copies under the daemon's mmap threshold (:mod:`dnsmaster.daemon.memory`) reuse
#: heap memory, where a fresh mapping faults in every page (a delta at 1M lines
#: took 1.6-1.7 s of CPU with 1 MiB pieces, 1.4 s with these).
CHUNK = 1 << 18


class Text(Protocol):
    """A data text that can be read by ranges: bytes in memory or a file."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (fewer only at the end)."""


class InMemory:
    """A text held as bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


def chunks(text: Text, size: int = CHUNK) -> Iterator[bytes]:
    """``text`` in pieces of about ``size`` bytes, each ending with a newline (the
    last may not): cut there, a piece splits into lines as the whole text does."""
    pos, carry = 0, b""
    while pos < text.size:
        block = text.read(pos, size)
        if not block:
            raise OSError(f"the text ends at byte {pos} of {text.size}")
        pos += len(block)
        block = carry + block if carry else block
        cut = block.rfind(b"\n") + 1 if pos < text.size else len(block)
        carry = block[cut:]
        if cut:
            yield block[:cut]
    if carry:
        yield carry


@dataclass(frozen=True, slots=True)
class Lines:
    """A text's lines, as hashes: ``offsets[k]`` is where line ``k`` starts (one more
    offset than lines: the last is the size); ``sha256`` is the text's as read."""

    hashes: array[int]
    offsets: array[int]
    sha256: str

    def __len__(self) -> int:
        return len(self.hashes)


def line_hashes(text: Text, serials: tuple[int, int] | None = None, *, chunk: int = CHUNK) -> Lines:
    """The hash and start of each line of ``text``, restamped from ``serials[0]`` to
    ``serials[1]`` as :func:`dnsmaster.core.delta.restamp` does (the sha256 is of
    the text itself)."""
    hashes: array[int] = array("q")
    # Four bytes an offset while they fit: 4 MB less a text at a million lines.
    offsets: array[int] = array("I" if text.size < 1 << 32 else "q", [0])
    digest = hashlib.sha256()
    first = True
    for piece in chunks(text, chunk):
        digest.update(piece)
        if serials is not None:
            # restamp() also rewrites the banner at the start of the whole text only:
            # a newline before any later piece keeps it from seeing one there.
            piece = deltas.restamp(piece if first else b"\n" + piece, *serials)
            piece = piece if first else piece[1:]
        first = False
        lines = piece.splitlines(keepends=True)
        hashes.extend(map(hash, lines))
        starts = accumulate(map(len, lines), initial=offsets[-1])
        next(starts)
        offsets.extend(starts)
    return Lines(hashes, offsets, digest.hexdigest())


@dataclass(frozen=True, slots=True)
class Span:
    """Lines ``start`` to ``end`` (exclusive) of the new text, inserted as they are."""

    start: int
    end: int


def diff(old: Lines, new: Lines) -> list[deltas.Copy | Span]:
    """The operations that make ``new`` from ``old`` (restamped): the walk of
    :func:`dnsmaster.core.delta.make` (:func:`~dnsmaster.core.delta.walk`), on hashes."""
    ops: list[deltas.Copy | Span] = []
    pending: int | None = None  # the first line of the insert under way
    for i, j, run in deltas.walk(old.hashes, new.hashes):
        if not run:
            if pending is None:
                pending = j
            continue
        if pending is not None:
            ops.append(Span(pending, j))
            pending = None
        deltas.copy_of(ops, old.offsets, i, run)
    if pending is not None:
        ops.append(Span(pending, len(new.hashes)))
    return ops


def make(
    base: Text,
    new: Text,
    *,
    base_sha256: str | None = None,
    limit: int | None = None,
    chunk: int = CHUNK,
) -> bytes | None:
    """The delta stream that turns ``base`` into ``new``, as
    :func:`dnsmaster.core.delta.make` writes it; None when ``base`` is not the text
    of ``base_sha256`` (a damaged kept build), or when the stream would reach
    ``limit`` bytes (the full data is then sent anyway)."""
    old_serial = previous_serial(base.read(0, 256))
    new_serial = previous_serial(new.read(0, 256))
    serials = None
    if old_serial is not None and new_serial is not None and old_serial != new_serial:
        serials = (old_serial, new_serial)
    old = line_hashes(base, serials, chunk=chunk)
    if base_sha256 is not None and old.sha256 != base_sha256:
        return None
    lines = line_hashes(new, chunk=chunk)
    ops: list[deltas.Copy | deltas.Insert] = []
    inserted = 0
    for op in diff(old, lines):
        if isinstance(op, deltas.Copy):
            ops.append(op)
            continue
        start = lines.offsets[op.start]
        text = new.read(start, lines.offsets[op.end] - start)
        inserted += len(text)
        if limit is not None and inserted >= limit:
            return None
        ops.append(deltas.Insert(text))
    pieces = list(deltas.encode(old.sha256, base.size, serials, ops, b""))
    pieces[-1] = Trailer(new.size, lines.sha256).line()  # the result's, not b""'s
    stream = b"".join(pieces)
    return None if limit is not None and len(stream) >= limit else stream
