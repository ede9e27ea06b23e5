"""Data texts read by lines, without holding them whole: the master's delta reads here.

Each text is read in pieces of a quarter megabyte (:class:`Text`: bytes in memory,
or a file read with ``pread``), and only a 64-bit hash and the start offset of
each line are kept (:class:`Lines`: 12 bytes a line, 16 from 4 GiB on).

Most pushes change a few lines of a large text: hashing every line of both (0.6 s
of CPU at 500,000 lines) is then most of a delta's work. :func:`window` first
compares the two texts as bytes (in C) from each end, after their first lines
(the banner names the build's sources, so it differs in every build): only the
lines between the common head and the common tail are hashed, the head stands as
one line of each side, and the tail's lines are hashed only as far as the walk
reads them (:class:`_Side`). Where the walk would read what the window does not
hold (a line of the head, a far line of the tail: its index of every line, which
it builds for a change of more than one line in a row), :class:`Outside` says so,
and the caller hashes every line of the base (:meth:`Window.spliced` takes the
new text's shared lines from it).
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol, overload

from dnsmaster.core import delta as deltas
from dnsmaster.errors import DnsmasterError

__all__ = [
    "CHUNK",
    "InMemory",
    "Lines",
    "Outside",
    "Text",
    "Window",
    "chunks",
    "line_hashes",
    "stamped",
    "window",
]

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


def stamped(piece: bytes, serials: tuple[int, int] | None, first: bool) -> bytes:
    """``piece`` (whole lines) restamped as it is in the whole text, ``first`` if it
    starts the text."""
    if serials is None:
        return piece
    if first:
        return deltas.restamp(piece, *serials)
    # restamp() also rewrites the banner at the start of the whole text only: a
    # newline before any later piece keeps it from seeing one there.
    return deltas.restamp(b"\n" + piece, *serials)[1:]


def line_hashes(
    text: Text,
    serials: tuple[int, int] | None = None,
    *,
    chunk: int = CHUNK,
    at_start: bool = True,
    digest: bool = True,
) -> Lines:
    """The hash and start of each line of ``text``, restamped from ``serials[0]`` to
    ``serials[1]`` as :func:`dnsmaster.core.delta.restamp` does (the sha256 is of
    the text itself). ``at_start`` False: ``text`` is lines from further on in a text
    (no banner to restamp). ``digest`` False: the sha256 is left empty."""
    hashes: array[int] = array("q")
    # Four bytes an offset while they fit: 4 MB less a text at a million lines.
    offsets: array[int] = array("I" if text.size < 1 << 32 else "q", [0])
    summed = hashlib.sha256()
    first = at_start
    for piece in chunks(text, chunk):
        if digest:
            summed.update(piece)
        piece = stamped(piece, serials, first)
        first = False
        lines = piece.splitlines(keepends=True)
        hashes.extend(map(hash, lines))
        starts = accumulate(map(len, lines), initial=offsets[-1])
        next(starts)
        offsets.extend(starts)
    return Lines(hashes, offsets, summed.hexdigest() if digest else "")


# --------------------------------------------------------------------------- the window


class Outside(DnsmasterError):
    """The walk reads lines the window does not hold: every line is hashed instead."""


class _Head:
    """The lines both texts share after their first, standing as one line of each:
    the walk reads it in step with the other text's, which it equals."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        raise Outside  # what the head's real lines would say is not known here

    def __hash__(self) -> int:
        raise Outside  # the walk's index of every line


_HEAD = _Head()


class _Region:
    """Bytes ``start`` to ``end`` of a text, as a text."""

    def __init__(self, text: Text, start: int, end: int) -> None:
        self._text, self._start, self.size = text, start, end - start

    def read(self, offset: int, size: int) -> bytes:
        return self._text.read(self._start + offset, min(size, self.size - offset))


class _Tail:
    """The lines both texts end with (the same bytes), hashed as the walk reads them:
    on from the first, a piece at a time, never a far line at once."""

    def __init__(self, text: Text, start: int, count: int, chunk: int) -> None:
        self.count = count
        self.hashes: array[int] = array("q")
        #: Where each hashed line starts, from the tail's start (and where the last ends).
        self.offsets: array[int] = array("q", [0])
        # Small pieces: the walk mostly reads a line or two of the tail.
        self._pieces = chunks(_Region(text, start, text.size), max(1, chunk >> 4))

    def reach(self, stop: int) -> None:
        """Hash lines until line ``stop - 1`` is; a line far past those hashed so far
        (the walk indexing every line) is :class:`Outside`."""
        if stop > len(self.hashes) + _NEAR:
            raise Outside
        while len(self.hashes) < stop:
            lines = next(self._pieces).splitlines(keepends=True)
            self.hashes.extend(map(hash, lines))
            starts = accumulate(map(len, lines), initial=self.offsets[-1])
            next(starts)
            self.offsets.extend(starts)


#: How many lines past those hashed the walk may read in the tail: a step or two,
#: and a galloping comparison's next stretch.
_NEAR = 1 << 16

# The parts of a side, in order.
_FIRST, _SHARED, _MIDDLE, _END = range(4)


class _Side(Sequence[object]):
    """One text's lines as the walk reads them: its first line (the banner, which
    names the build's sources, so differs in every build), the lines both texts
    share after it as one line (when there are some), the hashes of the lines
    between, then the common tail's."""

    def __init__(self, first: array[int], head: bool, middle: array[int], tail: _Tail) -> None:
        self.first, self.middle, self.tail = first, middle, tail
        # Where each part starts, and where the last ends.
        self.starts = list(accumulate((len(first), int(head), len(middle), tail.count), initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    @overload
    def __getitem__(self, k: int) -> object: ...

    @overload
    def __getitem__(self, k: slice) -> Sequence[object]: ...

    def __getitem__(self, k: int | slice) -> object | Sequence[object]:
        if isinstance(k, slice):
            start, stop, _ = k.indices(len(self))
            return _Range(self, start, max(start, stop))
        if not 0 <= k < len(self):
            raise IndexError(k)
        part, at, _ = self.part(k)
        return _HEAD if part == _SHARED else _hashes(self, part, at, 1)[0]

    def part(self, k: int) -> tuple[int, int, int]:
        """Line ``k``'s part, its place in the part, and how many of the part's lines
        start there."""
        part = bisect.bisect_right(self.starts, k) - 1
        return part, k - self.starts[part], self.starts[part + 1] - k


def _hashes(side: _Side, part: int, at: int, size: int) -> array[int]:
    """``size`` hashes from ``at`` in a side's part (not the shared head)."""
    if part == _END:
        side.tail.reach(at + size)
        return side.tail.hashes[at : at + size]
    return (side.first if part == _FIRST else side.middle)[at : at + size]


class _Range(Sequence[object]):
    """Lines ``start`` to ``stop`` of a side: compared as a list of them would be, a
    part at a time (two stretches of the tail at the same place are equal unread)."""

    def __init__(self, side: _Side, start: int, stop: int) -> None:
        self.side, self.start, self.stop = side, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    @overload
    def __getitem__(self, k: int) -> object: ...

    @overload
    def __getitem__(self, k: slice) -> Sequence[object]: ...

    def __getitem__(self, k: int | slice) -> object | Sequence[object]:
        if isinstance(k, slice):
            start, stop, _ = k.indices(len(self))
            return self.side[self.start + start : self.start + max(start, stop)]
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self.side[self.start + k]

    def __hash__(self) -> int:
        raise Outside

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Range):
            return NotImplemented
        size = len(self)
        if size != len(other):
            return False
        done = 0
        while done < size:
            mine, i, left = self.side.part(self.start + done)
            theirs, j, other_left = other.side.part(other.start + done)
            step = min(left, other_left, size - done)
            if _SHARED in (mine, theirs):
                if mine != theirs:
                    raise Outside
            elif not (mine == theirs == _END and i == j) and _hashes(
                self.side, mine, i, step
            ) != _hashes(other.side, theirs, j, step):
                return False
            done += step
        return True


class _Offsets(Sequence[int]):
    """Where each line of a side starts in its text (and where the last ends), from
    where its first line and its shared head end and its tail starts (``bounds``),
    the middle's lines' starts (from the head's end) and the text's size."""

    def __init__(
        self, side: _Side, bounds: tuple[int, int, int], middle: array[int], size: int
    ) -> None:
        self._side, (self._first, self._head, self._tail) = side, bounds
        self._middle, self._size = middle, size

    def __len__(self) -> int:
        return len(self._side) + 1

    @overload
    def __getitem__(self, k: int) -> int: ...

    @overload
    def __getitem__(self, k: slice) -> Sequence[int]: ...

    def __getitem__(self, k: int | slice) -> int | Sequence[int]:
        if isinstance(k, slice):
            return [self[n] for n in range(*k.indices(len(self)))]
        side = self._side
        if k == len(side):
            return self._size
        part, at, _ = side.part(k)
        if part == _FIRST:
            return 0
        if part == _SHARED:
            return self._first
        if part == _MIDDLE:
            return self._head + self._middle[at]
        side.tail.reach(at + 1)
        return self._tail + side.tail.offsets[at]


@dataclass(frozen=True, slots=True)
class _Flat:
    hashes: array[int]
    offsets: Sequence[int]


@dataclass(frozen=True, slots=True)
class _Lines:
    hashes: _Side
    offsets: _Offsets


@dataclass(frozen=True, slots=True)
class Window:
    """Both texts' lines as the walk reads them (``old``, ``new``: each line's hash
    and where it starts), and the texts' sha256."""

    old: _Lines
    new: _Lines
    base_sha256: str
    new_sha256: str
    #: Where each text's first line ends, the lines both share after it end, and
    #: the tail starts: the base's, then the new text's.
    old_bounds: tuple[int, int, int]
    new_bounds: tuple[int, int, int]
    #: The new text's lines between head and tail (offsets from the head's end).
    middle: Lines

    def spliced(self, old: Lines) -> _Flat:
        """The new text's lines, every one: those it shares with ``old`` (the base's,
        all of them) taken from it."""
        first, head, tail = (bisect.bisect_left(old.offsets, at) for at in self.old_bounds)
        moved = self.new_bounds[0] - self.old_bounds[0]  # the first lines' lengths differ
        shift = self.new_bounds[2] - self.old_bounds[2]
        own = self.new.hashes.first
        hashes = array("q", own)
        hashes.extend(old.hashes[first:head])
        hashes.extend(self.middle.hashes)
        hashes.extend(old.hashes[tail:])
        offsets = _Spliced(
            (
                ([0], 0, len(own), 0),
                (old.offsets, first, head, moved),
                (self.middle.offsets, 0, len(self.middle.hashes), self.new_bounds[1]),
                (old.offsets, tail, len(old.offsets), shift),
            )
        )
        return _Flat(hashes, offsets)


class _Spliced(Sequence[int]):
    """Offsets joined from stretches of others, each moved by a number of bytes:
    ``(offsets, start, stop, add)``."""

    def __init__(self, parts: tuple[tuple[Sequence[int], int, int, int], ...]) -> None:
        self._parts = parts
        self._len = sum(stop - start for _, start, stop, _ in parts)

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, k: int) -> int: ...

    @overload
    def __getitem__(self, k: slice) -> Sequence[int]: ...

    def __getitem__(self, k: int | slice) -> int | Sequence[int]:
        if isinstance(k, slice):
            return [self[n] for n in range(*k.indices(self._len))]
        if not 0 <= k < self._len:
            raise IndexError(k)
        for offsets, start, stop, add in self._parts:
            if k < stop - start:
                return offsets[start + k] + add
            k -= stop - start
        raise IndexError(k)  # pragma: no cover - the lengths add up


def _common_head(x: bytes, y: bytes) -> int:
    """How many bytes ``x`` and ``y`` start with alike (slices compared in C, halved)."""
    n = min(len(x), len(y))
    if x[:n] == y[:n]:
        return n
    low, high = 0, n  # x[:low] == y[:low], x[:high] != y[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if x[low:mid] == y[low:mid]:
            low = mid
        else:
            high = mid
    return low


def _common_tail(x: bytes, y: bytes) -> int:
    """How many bytes ``x`` and ``y`` end with alike."""
    n = min(len(x), len(y))
    if x[len(x) - n :] == y[len(y) - n :]:
        return n
    low, high = 0, n
    while high - low > 1:
        mid = (low + high) // 2
        if x[len(x) - mid : len(x) - low] == y[len(y) - mid : len(y) - low]:
            low = mid
        else:
            high = mid
    return low


_ENDS = (b"\n", b"\r")


def _first_end(text: Text) -> int:
    """Where the first line of ``text`` ends."""
    pos = 0
    while pos < text.size:
        block = text.read(pos, 4096)
        found = [k for k in (block.find(c) for c in _ENDS) if k >= 0]
        if found:
            end = pos + min(found)
            return end + (2 if text.read(end, 2) == b"\r\n" else 1)
        pos += len(block)
    return text.size


def _head(
    base: Text,
    new: Text,
    serials: tuple[int, int] | None,
    firsts: tuple[int, int],
    *,
    new_sha256: str | None,
    chunk: int,
) -> tuple[int, str, str]:
    """How many bytes both texts share after their first lines (``firsts``: where
    those end), cut after a line's end (``base`` restamped), and the texts' sha256
    (``new``'s read only as far as needed when it is given)."""
    base_digest, new_digest = hashlib.sha256(base.read(0, firsts[0])), hashlib.sha256()
    if new_sha256 is None:
        new_digest.update(new.read(0, firsts[1]))
    head: int | None = None
    pos = 0
    rest = _Region(base, firsts[0], base.size)
    for piece in chunks(rest, chunk):
        base_digest.update(piece)
        if head is None or new_sha256 is None:
            other = new.read(firsts[1] + pos, len(piece))
            new_digest.update(other)
        if head is None:
            mine = stamped(piece, serials, False)
            if mine != other or pos + len(piece) == rest.size:
                same = _common_head(mine, other)
                if same < len(mine) or len(other) == len(mine):
                    head = pos + _line_start_before(other, same)
        pos += len(piece)
    if new_sha256 is None:
        for at in range(firsts[1] + pos, new.size, chunk):
            new_digest.update(new.read(at, chunk))
        new_sha256 = new_digest.hexdigest()
    return head or 0, base_digest.hexdigest(), new_sha256


def _line_start_before(piece: bytes, same: int) -> int:
    """The last line start in ``piece`` (which starts a line) at or before byte
    ``same``, where two texts alike until there may part: a ``\\r`` just before it
    may be a ``\\r\\n`` in the other."""
    end = same - 1 if same and piece[same - 1 : same] == b"\r" else same
    return max(piece.rfind(c, 0, end) for c in _ENDS) + 1


def _ends(piece: bytes) -> int:
    """How many lines end in ``piece`` (a ``\\r\\n`` is one end)."""
    ends = piece.count(b"\n")
    if b"\r" in piece:
        ends += piece.count(b"\r") - piece.count(b"\r\n")
    return ends


def _tail(
    base: Text, new: Text, serials: tuple[int, int] | None, most: int, chunk: int
) -> tuple[int, int]:
    """How many bytes both texts end with alike (``base`` restamped), at most
    ``most``, and how many line ends those bytes hold."""
    same = ends = 0
    end = base.size
    while same < most and end > 0:
        start = max(0, end - chunk)
        block = base.read(start, end - start)
        while start > 0:
            # A piece restamps as the whole text does when it starts a line.
            cut = block.find(b"\n")
            if 0 <= cut < len(block) - 1:
                start += cut + 1
                block = block[cut + 1 :]
                break
            more = min(chunk, start)
            start -= more
            block = base.read(start, more) + block
        mine = stamped(block, serials, start == 0)
        at = new.size - same - len(mine)
        other = new.read(max(0, at), len(mine) + min(0, at))
        alike = min(_common_tail(mine, other), most - same)
        same += alike
        ends += _ends(other[len(other) - alike :])
        if alike < len(mine):
            break
        end = start
    return same, ends


def _starts_line(text: Text, pos: int) -> bool:
    if pos == 0:
        return True
    pair = text.read(pos - 1, 2)
    return pair[:1] == b"\n" or (pair[:1] == b"\r" and pair[1:] != b"\n")


def _tail_start(base: Text, new: Text, same: int) -> int:
    """Where in ``new`` the first line starts, in the last ``same`` bytes both texts
    share, that starts a line in both."""
    at = new.size - same
    if _starts_line(new, at) and _starts_line(base, base.size - same):
        return at
    end = _first_end(_Region(new, at, new.size))
    return at + end


def window(
    base: Text, new: Text, serials: tuple[int, int] | None, new_sha256: str | None, chunk: int
) -> Window | None:
    """Both texts' lines around what changed, for the walk; None when the restamp
    changes the base's length (a serial gaining a digit), which the bytes'
    comparison in place does not follow."""
    if serials is not None and len(b"%d" % serials[0]) != len(b"%d" % serials[1]):
        return None
    firsts = _first_end(base), _first_end(new)
    shared, base_sha256, new_sha256 = _head(
        base, new, serials, firsts, new_sha256=new_sha256, chunk=chunk
    )
    most = min(base.size - firsts[0], new.size - firsts[1]) - shared
    same, ends = _tail(base, new, serials, most, chunk)
    tail = _tail_start(base, new, same)
    # The line ends before the tail's first line, in the bytes both end with, are not its.
    ends -= _ends(new.read(new.size - same, tail - (new.size - same)))
    if tail < new.size and new.read(new.size - 1, 1) not in _ENDS:
        ends += 1  # a last line without its end
    common = _Tail(new, tail, ends, chunk)
    sides = []
    bounds = []
    for text, first, stamp in ((base, firsts[0], serials), (new, firsts[1], None)):
        head, end = first + shared, tail - new.size + text.size
        lines = line_hashes(_Region(text, 0, first), stamp, chunk=chunk, digest=False)
        middle = line_hashes(
            _Region(text, head, end), stamp, chunk=chunk, at_start=head == 0, digest=False
        )
        side = _Side(lines.hashes, shared > 0, middle.hashes, common)
        bounds.append((first, head, end))
        sides.append(_Lines(side, _Offsets(side, bounds[-1], middle.offsets, text.size)))
    return Window(sides[0], sides[1], base_sha256, new_sha256, bounds[0], bounds[1], middle)
