"""The master's side of a delta push, from line hashes read in chunks.

:func:`dnsmaster.core.delta.make` splits two whole data texts into lines: at 1M
lines that is two million bytes objects and a restamped copy of the base, some
300 MB for a moment. Here each text is read in pieces and only a hash and the
start of each line are kept (:mod:`dnsmaster.master.linescan`), and only around
what changed when the walk allows (:func:`~dnsmaster.master.linescan.window`).
The operations are the very ones :func:`~dnsmaster.core.delta.make` finds (the
same walk, :func:`~dnsmaster.core.delta.walk`, on hashes instead of lines), so
the stream is the same bytes; an insert's text is read from the new data once
the operations are known.

Two different lines with the same hash would make a copy of the wrong line; the
receiver checks the result's length and sha256 against the trailer and refuses it,
and the full data follows (at 1M lines the chance is about one in 10**7 per
push, with Python's 64-bit SipHash).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dnsmaster.core import delta as deltas
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.stream import Trailer
from dnsmaster.master.linescan import (
    CHUNK,
    InMemory,
    Lines,
    Outside,
    Text,
    chunks,
    line_hashes,
    window,
)

# Text, InMemory, chunks and line_hashes are read from here by the push's payload.
__all__ = ["CHUNK", "InMemory", "Lines", "Span", "Text", "chunks", "diff", "line_hashes", "make"]


@dataclass(frozen=True, slots=True)
class Span:
    """Lines ``start`` to ``end`` (exclusive) of the new text, inserted as they are."""

    start: int
    end: int


class _View(Protocol):
    """What :func:`diff` reads of a text's lines: their hashes and where they start."""

    @property
    def hashes(self) -> Sequence[object]: ...

    @property
    def offsets(self) -> Sequence[int]: ...


def diff(old: _View, new: _View) -> list[deltas.Copy | Span]:
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
    new_sha256: str | None = None,
    limit: int | None = None,
    chunk: int = CHUNK,
) -> bytes | None:
    """The delta stream that turns ``base`` into ``new``, as
    :func:`dnsmaster.core.delta.make` writes it; None when ``base`` is not the text
    of ``base_sha256`` (a damaged kept build), or when the stream would reach
    ``limit`` bytes (the full data is then sent anyway). ``new_sha256``, when the
    caller knows it, spares hashing ``new`` again."""
    old_serial = previous_serial(base.read(0, 256))
    new_serial = previous_serial(new.read(0, 256))
    serials = None
    if old_serial is not None and new_serial is not None and old_serial != new_serial:
        serials = (old_serial, new_serial)
    walked = _walked(
        base, new, serials, base_sha256=base_sha256, new_sha256=new_sha256, chunk=chunk
    )
    if walked is None:
        return None
    found, old_sha256, new_sha256, offsets = walked
    ops: list[deltas.Copy | deltas.Insert] = []
    inserted = 0
    for op in found:
        if isinstance(op, deltas.Copy):
            ops.append(op)
            continue
        start = offsets[op.start]
        text = new.read(start, offsets[op.end] - start)
        inserted += len(text)
        if limit is not None and inserted >= limit:
            return None
        ops.append(deltas.Insert(text))
    pieces = list(deltas.encode(old_sha256, base.size, serials, ops, b""))
    pieces[-1] = Trailer(new.size, new_sha256).line()  # the result's, not b""'s
    stream = b"".join(pieces)
    return None if limit is not None and len(stream) >= limit else stream


def _walked(
    base: Text,
    new: Text,
    serials: tuple[int, int] | None,
    *,
    base_sha256: str | None,
    new_sha256: str | None,
    chunk: int,
) -> tuple[list[deltas.Copy | Span], str, str, Sequence[int]] | None:
    """The walk's operations, both texts' sha256 and where the new text's lines
    start; None for a damaged base."""
    found = window(base, new, serials, new_sha256, chunk)
    if found is None:
        old = line_hashes(base, serials, chunk=chunk)
        if base_sha256 is not None and old.sha256 != base_sha256:
            return None
        lines = line_hashes(new, chunk=chunk)
        return diff(old, lines), old.sha256, lines.sha256, lines.offsets
    if base_sha256 is not None and found.base_sha256 != base_sha256:
        return None
    sha256s = found.base_sha256, found.new_sha256
    try:
        return diff(found.old, found.new), *sha256s, found.new.offsets
    except Outside:
        # Every line of the base, then: the new text's head and tail are the same lines.
        old = line_hashes(base, serials, chunk=chunk, digest=False)
        spliced = found.spliced(old)
        return diff(old, spliced), *sha256s, spliced.offsets
