"""Delta pushes: a new ``data`` sent as edits of a base the slave already holds.

A delta stream is three parts, each checked strictly by :func:`parse`::

    #dnsmaster-delta 1 base=<sha256> bytes=<N> restamp=<OLD>,<NEW>
    = 0 9512337                copy 9512337 bytes of the restamped base, from byte 0
    + 57                       insert the next 57 bytes as they are
    <57 bytes>
    = 9512394 18474379
    #dnsmaster-end bytes=<N> sha256=<sha256>

The header names the base by its exact sha256 and length: the receiver applies
the delta only to a ``data`` of exactly those bytes. The trailer is the one of a
full push (:mod:`dnsmaster.core.stream`) and describes the *result*: the receiver
rebuilds the new ``data`` and installs it only if its length and sha256 are the
trailer's. A stream cut anywhere has no trailer, or ends inside an operation, and
is refused.

Why a restamp: make-data writes the build's serial into the banner and into every
``Z`` line it writes (one per zone), so two builds differ on every zone even when
one line changed. Both sides first apply :func:`restamp` to the base (the old
serial becomes the new one in the banner and wherever it stands as a whole field,
which is where every ``Z`` line has it), and the operations are computed and
applied against that. Exactness does not rest on the restamp: a line it gets
wrong is just an inserted line, and the result is checked against the trailer
either way.

The master compares lines (``bytes.splitlines(keepends=True)`` units); the
operations copy byte ranges, so the receiver only slices and joins. Any bytes
(NUL, CR, no final newline) round-trip: the result is the concatenation of what
the operations produce. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, TypeVar

from dnsmaster.core.banner import BANNER, previous_serial
from dnsmaster.core.stream import TRAILER_MAX, Trailer, seal, split
from dnsmaster.errors import DeltaError

__all__ = [
    "FORMAT",
    "HEADER_MAX",
    "MAGIC",
    "Copy",
    "Delta",
    "Insert",
    "Operations",
    "apply",
    "copy_of",
    "encode",
    "make",
    "parse",
    "restamp",
    "same_run",
    "walk",
]

_T = TypeVar("_T")

#: What the header line starts with, and the version of this encoding.
MAGIC = b"#dnsmaster-delta "
FORMAT = 1

# A decimal without leading zeros; 12 digits is far past any size the receiver takes.
_NUM = rb"(0|[1-9][0-9]{0,11})"
_POS = rb"([1-9][0-9]{0,11})"
_HEADER = re.compile(
    rb"#dnsmaster-delta 1 base=([0-9a-f]{64}) bytes="
    + _NUM
    + rb" restamp=(?:none|"
    + _NUM
    + rb","
    + _NUM
    + rb")\n"
)
# One pattern for both operations: one match per operation.
_OP = re.compile(rb"= " + _NUM + rb" " + _POS + rb"\n|\+ " + _POS + rb"\n")
# Up to 4096 copies in a row, matched at once and their numbers read in C: a stream
# of nothing but one-byte copies costs a few times less than one match each.
_COPIES = re.compile(rb"(?:= (?:0|[1-9][0-9]{0,11}) (?:[1-9][0-9]{0,11})\n){1,4096}")
_NUMBERS = re.compile(rb"[0-9]+")
_TRAILER_START = b"#dnsmaster-end "
#: No header line is longer than this.
HEADER_MAX = 160
_U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Copy:
    """Bytes ``start`` to ``start + size`` of the restamped base."""

    start: int
    size: int


@dataclass(frozen=True, slots=True)
class Insert:
    """Bytes of the result the base does not have."""

    text: bytes


Op = Copy | Insert


@dataclass(frozen=True, slots=True)
class Delta:
    """A parsed delta: the base it applies to, the restamp, the operations, the result."""

    base_sha256: str
    base_size: int
    #: (old serial, new serial), or None: no restamp.
    serials: tuple[int, int] | None
    ops: Operations
    result: Trailer


@dataclass(frozen=True, slots=True)
class Operations:
    """A parsed delta's operations, left where they are: bytes ``start`` to ``end`` of
    ``stream``, checked by :func:`parse`, ``count`` of them.

    Not one object per operation: a stream of 40 million one-byte copies took 3 GB
    that way. The operations are read again from the stream as they are applied.
    """

    stream: bytes
    start: int
    end: int
    count: int

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Op]:
        """Each operation as an object (for tests and tools; :meth:`fill` makes none)."""
        for copy, begin, size in _walk(self.stream, self.start, self.end):
            yield Copy(begin, size) if copy else Insert(self.stream[begin : begin + size])

    def fill(self, result: bytearray, base: bytes) -> None:
        """Write what the operations make into ``result`` (of the trailer's length),
        copying from ``base`` (restamped)."""
        at = n = 0
        with memoryview(base) as view, memoryview(self.stream) as own:
            for copy, begin, size in _walk(self.stream, self.start, self.end):
                n += 1
                if at + size > len(result):  # parse checked it; a Delta made by hand may not be
                    raise DeltaError(
                        f"operation {n}: the result passes the {len(result)} bytes "
                        "the trailer states"
                    )
                if not copy:
                    result[at : at + size] = own[begin : begin + size]
                elif begin + size <= len(base):
                    result[at : at + size] = view[begin : begin + size]
                else:
                    raise DeltaError(
                        f"operation {n}: copies bytes {begin} to {begin + size}, "
                        f"the restamped base has {len(base)}"
                    )
                at += size


# --------------------------------------------------------------------------- restamp


def restamp(data: bytes, old: int, new: int) -> bytes:
    """``data`` with serial ``old`` replaced by ``new`` where make-data writes it.

    That is the banner's serial, and every ``:OLD:``: the serial field of every
    ``Z`` line make-data writes (more fields always follow it). Scanning for the
    bytes is five times faster than matching ``Z`` lines (0.025 s against 0.12 s
    for 500,000 lines), and both sides run this very function; the rare field
    elsewhere that equals a 32-bit serial is only a line the delta then carries.
    """
    if old == new:
        return data
    o, n = b"%d" % old, b"%d" % new
    head = BANNER + o
    if data.startswith(head) and data[len(head) : len(head) + 1] in (b" ", b"\n"):
        data = BANNER + n + data[len(head) :]
    return data.replace(b":%s:" % o, b":%s:" % n)


def _serials(base: bytes, new: bytes) -> tuple[int, int] | None:
    old_serial = previous_serial(base[:256])
    new_serial = previous_serial(new[:256])
    if old_serial is None or new_serial is None or old_serial == new_serial:
        return None
    return old_serial, new_serial


# --------------------------------------------------------------------------- diff


def same_run(a: Sequence[_T], i: int, b: Sequence[_T], j: int) -> int:
    """How many items from a[i] and b[j] on are equal (galloping slice compares):
    lines here, their hashes in :mod:`dnsmaster.master.linediff`."""
    limit = min(len(a) - i, len(b) - j)
    run = 0
    step = 1
    while run < limit:
        size = min(step, limit - run)
        if a[i + run : i + run + size] == b[j + run : j + run + size]:
            run += size
            step *= 2
        elif size == 1:
            break
        else:
            step = 1
    return run


def walk(a: Sequence[_T], b: Sequence[_T]) -> Iterator[tuple[int, int, int]]:
    """The steps that build ``b`` from ``a`` (lines, or their hashes), in order of
    ``b``: ``(i, j, run)`` copies ``a[i:i + run]`` as ``b[j:j + run]``; ``run`` 0
    inserts ``b[j]`` as it is. Linear time.

    Walks ``b``: where it goes on as ``a`` does, a copy; at a change, a line replaced
    in place (the next lines agree again), one inserted or removed (they agree one
    line further on one side), or a line found elsewhere in ``a`` (an index built on
    first need); else the line is inserted. Not minimal, but a change
    of a few lines costs a few operations, and no input makes it slow.
    """
    index: dict[_T, int] | None = None
    i = j = 0
    while j < len(b):
        if i < len(a) and a[i] == b[j]:
            run = same_run(a, i, b, j)
            yield i, j, run
            i += run
            j += run
            continue
        # Replaced in place: b[j] is new, and a and b agree again right after.
        if i + 1 < len(a) and j + 1 < len(b) and a[i + 1] == b[j + 1]:
            yield i, j, 0
            i += 1
            j += 1
            continue
        # One line inserted or one removed: cheaper to see than to index all of a
        # (half a second at 500,000 lines), and the commonest edits.
        if i < len(a) and j + 1 < len(b) and a[i] == b[j + 1]:
            yield i, j, 0
            j += 1
            continue
        if i + 1 < len(a) and a[i + 1] == b[j]:
            i += 1
            continue
        if index is None:
            # Built from the end, so that the first occurrence wins; in C, not a loop
            # of Python statements (half a second at 500,000 lines).
            index = dict(zip(reversed(a), range(len(a) - 1, -1, -1), strict=True))
        found = index.get(b[j])
        if found is None:
            yield i, j, 0
            j += 1
            continue
        i = found


def copy_of(ops: list[Any], offset: Sequence[int], start: int, count: int) -> None:
    """Append the copy of lines ``start`` to ``start + count`` of the base (``offset``:
    where each of its lines starts, and its end) to ``ops``, merged into the copy
    before it when the two touch."""
    begin, size = offset[start], offset[start + count] - offset[start]
    last = ops[-1] if ops else None
    if isinstance(last, Copy) and last.start + last.size == begin:
        ops[-1] = Copy(last.start, last.size + size)
    else:
        ops.append(Copy(begin, size))


def _diff(a: Sequence[bytes], b: Sequence[bytes]) -> list[Op]:
    """Operations that build ``b`` from ``a`` (lists of lines): :func:`walk`'s."""
    ops: list[Op] = []
    pending: list[bytes] = []
    # offset[k]: where line k of a starts, in bytes
    offset = [0, *accumulate(map(len, a))]
    for i, j, run in walk(a, b):
        if not run:
            pending.append(b[j])
            continue
        if pending:
            ops.append(Insert(b"".join(pending)))
            pending.clear()
        copy_of(ops, offset, i, run)
    if pending:
        ops.append(Insert(b"".join(pending)))
    return ops


def make(base: bytes, new: bytes) -> bytes:
    """The delta stream that turns ``base`` into ``new``, trailer included."""
    serials = _serials(base, new)
    stamped = restamp(base, *serials) if serials else base
    ops = _diff(stamped.splitlines(keepends=True), new.splitlines(keepends=True))
    return b"".join(encode(hashlib.sha256(base).hexdigest(), len(base), serials, ops, new))


def encode(
    base_sha256: str,
    base_size: int,
    serials: tuple[int, int] | None,
    ops: Sequence[Op],
    result: bytes,
) -> Iterator[bytes]:
    """The stream's pieces: header, operations, the result's trailer."""
    restamp_field = b"none" if serials is None else b"%d,%d" % serials
    yield b"%s%d base=%s bytes=%d restamp=%s\n" % (
        MAGIC,
        FORMAT,
        base_sha256.encode(),
        base_size,
        restamp_field,
    )
    for op in ops:
        if isinstance(op, Copy):
            yield b"= %d %d\n" % (op.start, op.size)
        else:
            yield b"+ %d\n" % len(op.text)
            yield op.text
    yield _result_trailer(result)


def _result_trailer(result: bytes) -> bytes:
    if result and not result.endswith(b"\n"):
        # seal() insists on a final newline for a stream that is data itself; a delta's
        # trailer follows operations, so any result can be described.
        return Trailer(len(result), hashlib.sha256(result).hexdigest()).line()
    return seal(result)


# --------------------------------------------------------------------------- parse, apply


def _shown(chunk: bytes) -> str:
    """A few bytes of ``chunk`` for an error message, escaped."""
    text = chunk[:40].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(chunk) > 40 else ""))


def parse(stream: bytes, *, max_size: int | None = None) -> Delta:
    """Read a delta stream; :class:`~dnsmaster.errors.DeltaError` names the first bad byte.

    ``max_size`` caps the result the trailer may claim (the receiver's size cap).
    The trailer is read first, so that the operations are checked against the
    result it states as they are read: parsing stops at the first operation that
    passes it, and keeps no object per operation (see :class:`Operations`). So a
    hostile stream costs memory and time bounded by the cap, never by its count
    of operations alone.
    """
    header = _HEADER.match(stream)
    if header is None:
        if not stream.startswith(MAGIC):
            raise DeltaError(f"byte 0: not a delta (it starts {_shown(stream)})")
        line = stream[: stream.find(b"\n") + 1 or HEADER_MAX]
        raise DeltaError(f"byte 0: malformed delta header {_shown(line)}")
    serials = None
    if header.group(3) is not None:
        old, new = int(header.group(3)), int(header.group(4))
        if old > _U32 or new > _U32:
            raise DeltaError("byte 0: a restamp serial over 4294967295")
        serials = (old, new)
    start = header.end()
    # The trailer ends the stream; it starts where the last operation ends, which is
    # not always at a line's start (an insert may end without a newline). It holds its
    # start string once, so the last one within its reach is its own.
    end = stream.rfind(_TRAILER_START, max(start, len(stream) - TRAILER_MAX))
    end = start if end < 0 else end
    trailer = _trailer(stream, end)
    if max_size is not None and trailer.size > max_size:
        raise DeltaError(f"the result would be {trailer.size} bytes, over the cap of {max_size}")
    ops = Operations(stream, start, end, _count(stream, start, end, trailer.size))
    return Delta(header.group(1).decode(), int(header.group(2)), serials, ops, trailer)


def _count(stream: bytes, pos: int, end: int, size: int) -> int:
    """How many operations lie between ``pos`` and ``end``, checked to make ``size`` bytes.

    Every operation makes at least one byte (a copy or an insert of nothing is
    malformed), so there are never more operations than the result has bytes, and
    the count stops at the first one that would pass them.
    """
    count = made = 0
    for _, _, length in _walk(stream, pos, end):
        count += 1
        made += length
        if made > size:
            raise DeltaError(
                f"operation {count}: the result passes the {size} bytes the trailer states"
            )
    if made != size:
        raise DeltaError(f"the operations make {made} bytes, the trailer states {size}")
    return count


def _walk(stream: bytes, pos: int, end: int) -> Iterator[tuple[bool, int, int]]:
    """The operations from ``pos`` to ``end``: (whether a copy, start, length) each,
    as :func:`_op` reads them; DeltaError at the first malformed one."""
    while pos < end:
        run = _COPIES.match(stream, pos, end)
        if run is None:
            copy, begin, size, pos = _op(stream, pos, end)
            yield copy, begin, size
            continue
        numbers = map(int, _NUMBERS.findall(stream, pos, run.end()))
        for begin, size in zip(numbers, numbers, strict=True):
            yield True, begin, size
        pos = run.end()


def _op(stream: bytes, pos: int, end: int) -> tuple[bool, int, int, int]:
    """The operation at ``pos``: (whether a copy, where its bytes start, how many, where
    the next operation starts). An insert's bytes start in ``stream``, a copy's in the
    restamped base."""
    m = _OP.match(stream, pos, end)
    if m is not None:
        if m.lastindex == 2:
            return True, int(m.group(1)), int(m.group(2)), m.end()
        size = int(m.group(3))
        if m.end() + size > end:
            raise DeltaError(
                f"byte {pos}: an insert of {size} bytes with {end - m.end()} left "
                "before the trailer (cut?)"
            )
        return False, m.end(), size, m.end() + size
    lead = stream[pos : pos + 1]
    found = _shown(stream[pos : min(pos + 40, end)])
    if lead == b"=":
        raise DeltaError(f"byte {pos}: malformed copy {found}")
    if lead == b"+":
        raise DeltaError(f"byte {pos}: malformed insert {found}")
    if stream.startswith(_TRAILER_START, pos):
        raise DeltaError(f"byte {pos}: the trailer is not the last line")
    raise DeltaError(
        f"byte {pos}: expected '= START COUNT', '+ BYTES' or the trailer, found {found}"
    )


def _trailer(stream: bytes, pos: int) -> Trailer:
    rest = stream[pos:]
    if not rest.startswith(_TRAILER_START):
        raise DeltaError(f"byte {pos}: the delta does not end with its trailer line (cut?)")
    if len(rest) > TRAILER_MAX or not rest.endswith(b"\n") or rest.count(b"\n") != 1:
        raise DeltaError(f"byte {pos}: the trailer is not the last line, or is cut")
    _, trailer = split(rest)
    if trailer is None:
        raise DeltaError(f"byte {pos}: malformed trailer {_shown(rest)}")
    return trailer


def apply(delta: Delta, base: bytes) -> bytes:
    """The new ``data``: ``delta`` applied to ``base``, checked against the trailer.

    Raises :class:`~dnsmaster.errors.DeltaError` when ``base`` is not the one the
    delta names, an operation reaches outside it, or the result is not the one the
    trailer describes. Each operation writes straight into the result, which has
    the trailer's length from the start: the memory is the base, its restamped copy
    and the result, however many operations there are.
    """
    if len(base) != delta.base_size:
        raise DeltaError(
            f"base mismatch: the installed data is {len(base)} bytes, the delta's base "
            f"{delta.base_size} (edited by hand, or another build)"
        )
    digest = hashlib.sha256(base).hexdigest()
    if digest != delta.base_sha256:
        raise DeltaError(
            f"base mismatch: the installed data has sha256 {digest}, the delta's base "
            f"{delta.base_sha256} (edited by hand, or another build)"
        )
    stamped = restamp(base, *delta.serials) if delta.serials else base
    result = bytearray(delta.result.size)
    delta.ops.fill(result, stamped)
    del stamped  # before the copy below: the peak is two of the three, not all three
    digest = hashlib.sha256(result).hexdigest()
    if digest != delta.result.sha256:
        raise DeltaError(
            f"result mismatch: sha256 {digest} differs from the trailer's {delta.result.sha256}"
        )
    return bytes(result)
