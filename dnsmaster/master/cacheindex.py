"""The build cache's index as bytes: what :func:`encode` writes and :func:`decode` reads.

The layout (see :mod:`dnsmaster.master.buildcache` for what it means): a header
(magic, format, version, code digest, options digest, serial, banner length, the
stat of ``data`` and of ``data.cdb``, the number of sources, the length of each
section), nine sections (the names, a fixed row per source, a stat per source,
the lengths of every text piece, the offsets of every SOA serial, the warnings'
lines, their reasons' lengths, the reasons, the records' (hash, position) pairs),
and the sha256 of all before it.

Every section is a column (one array of numbers for all sources), so both ends
work on whole columns: a zones file per customer makes 100,000 sources, and a
Python statement per source per step was most of a rebuild after a one-file
change. :func:`decode` checks every count and length before it trusts any.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import operator
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate, chain, compress, islice, repeat
from operator import add, mul, sub
from pathlib import Path
from typing import NamedTuple

from dnsmaster import __version__
from dnsmaster.core import makedata
from dnsmaster.core.compiler import no_gc
from dnsmaster.errors import DataError, DnsmasterError

__all__ = [
    "FORMAT",
    "InvalidIndex",
    "Kept",
    "Sections",
    "Stat",
    "code_digest",
    "decode",
    "encode",
]

#: The version of the index format; an index of another is ignored.
FORMAT = 5

#: A file's stat as the cache compares it: device, inode, size, mtime_ns, ctime_ns.
Stat = tuple[int, ...]

_MAGIC = b"dnsmaster-index\n"
# magic, format, version, code digest, options digest, serial, banner length,
# stat of data, stat of data.cdb, sources, then the 9 section lengths
_HEADER = struct.Struct("<16sI16s32s32sQQ5Q5QQ9Q")
# per source: sha256, pieces, records length, count, serials, lines, warnings; its stat
_ROW_FORMAT = "<32sIQIIQI"
_ROW = struct.Struct(_ROW_FORMAT)
_SECTIONS = 9
_NO_STAT = (0, 0, 0, 0, 0)
_SURROGATES = "surrogateescape"
_NONE: tuple[DataError, ...] = ()
# array's items are in the machine's order; the index's are little-endian
_SWAP = sys.byteorder != "little"


class InvalidIndex(DnsmasterError, ValueError):
    """The index failed a check; the message says which."""


class Kept(NamedTuple):
    """One source as the last build wrote it: numbers, not bytes. ``pieces`` are
    the lengths of its text's pieces (the serial goes between two), ``size`` their
    sum, ``records`` the length of its records in ``data.cdb`` and ``nrecords`` how
    many, ``serials`` the offsets in them of the SOA serials. A tuple rather than a
    frozen dataclass: a new process makes one per source (100,000 for a zones file
    per customer), and a tuple is made in a third of the time.
    """

    name: str
    digest: bytes
    pieces: tuple[int, ...]
    size: int
    records: int
    nrecords: int
    serials: tuple[int, ...]
    warnings: tuple[DataError, ...]
    lines: int

    def text_length(self, width: int) -> int:
        """The length of its text in a ``data`` whose serial has ``width`` digits."""
        return self.size + width * (len(self.pieces) - 1)


@functools.cache
def code_digest() -> bytes:
    """What decides a compile besides the source: dnsmaster's version and the core's
    code (not the C accelerator's, which the tests hold to the same bytes). Taken
    once, at import: the code this process runs, not what an upgrade puts on disk."""
    h = hashlib.sha256(__version__.encode())
    for path in sorted(Path(makedata.__file__).parent.glob("*.py")):
        h.update(b"\0" + path.name.encode())
        with contextlib.suppress(OSError):  # a missing file still changes the digest
            h.update(b"\0" + path.read_bytes())
    return h.digest()


code_digest()

_names, _digest = operator.attrgetter("name"), operator.attrgetter("digest")
_records, _nrecords = operator.attrgetter("records"), operator.attrgetter("nrecords")
_lines = operator.attrgetter("lines")
_pieces = operator.attrgetter("pieces")
_serials = operator.attrgetter("serials")
_warnings = operator.attrgetter("warnings")
_size = operator.attrgetter("size")


def encode(
    sources: Sequence[Kept],
    stats: dict[str, Stat],
    *,
    serial: int,
    banner: int,
    pair: tuple[Stat, Stat],
    options: bytes = b"",
    code: bytes | None = None,
    pairs: bytes | memoryview = b"",
) -> bytes:
    """The index of a pair stamped with ``serial`` (``banner`` bytes of banner) and
    holding ``sources`` in order; ``pair`` is the stat of ``data`` and ``data.cdb``,
    ``pairs`` the (hash, position) pair of each record of ``data.cdb``, in record
    order (8 bytes a record, or nothing: the keys are then read and hashed).

    Each section is packed whole from its column: no statement runs per source.
    """
    parts = Sections.of(sources, stats).encoded(
        serial=serial, banner=banner, pair=pair, options=options, code=code, pairs=pairs
    )
    return b"".join(parts)


class Sections:
    """The index's sections but the records' pairs, packed, and the columns of the
    rows that say where each source's pieces are in the flat sections.

    A daemon keeps the last build's and :meth:`patched` copies them with only the
    changed rows packed anew: after a one-file change at 100,000 files, packing every
    row again was most of the rebuild. The numbers are in the machine's order (the
    index's are little-endian: :meth:`encoded` swaps them where they differ).
    """

    __slots__ = (
        "named",
        "names",
        "names_blob",
        "npieces",
        "nrecords",
        "nserials",
        "nwarnings",
        "pieces",
        "reasons",
        "records",
        "rows",
        "serials",
        "sizes",
        "stats",
        "wlines",
        "wsizes",
    )

    def __init__(self) -> None:
        self.names: list[str] = []
        self.names_blob = b""
        self.named: list[dict[str, int]] = []  # rows_of(), once made
        self.rows = bytearray()
        self.stats = array("Q")
        self.pieces, self.npieces, self.sizes = array("I"), array("I"), array("Q")
        self.serials, self.nserials = array("Q"), array("I")
        self.records, self.nrecords = array("Q"), array("I")
        self.wlines, self.wsizes, self.reasons = array("Q"), array("I"), bytearray()
        self.nwarnings = array("I")

    @classmethod
    def of(cls, sources: Sequence[Kept], stats: dict[str, Stat]) -> Sections:
        """Every section packed from ``sources`` (in order) and their ``stats``."""
        new = cls()
        with no_gc():
            new.names = names = list(map(_names, sources))
            new.names_blob = "\0".join(names).encode("utf-8", _SURROGATES)
            count = len(names)
            new.npieces = array("I", map(len, map(_pieces, sources)))
            new.sizes = array("Q", map(_size, sources))
            new.records = array("Q", map(_records, sources))
            new.nrecords = array("I", map(_nrecords, sources))
            new.nserials = array("I", map(len, map(_serials, sources)))
            new.nwarnings = array("I", map(len, map(_warnings, sources)))
            rows = zip(
                map(_digest, sources),
                new.npieces,
                new.records,
                new.nrecords,
                new.nserials,
                map(_lines, sources),
                new.nwarnings,
                strict=True,
            )
            new.rows = bytearray(
                struct.pack(_ROW_FORMAT[0] + _ROW_FORMAT[1:] * count, *chain.from_iterable(rows))
            )
            seen = map(stats.get, names, repeat(_NO_STAT))
            new.stats = array("Q", chain.from_iterable(seen))
            new.pieces = array("I", chain.from_iterable(map(_pieces, sources)))
            new.serials = array("Q", chain.from_iterable(map(_serials, sources)))
            warned = list(chain.from_iterable(map(_warnings, sources)))
            reasons = [w.reason.encode("utf-8", _SURROGATES) for w in warned]
            new.wlines = array("Q", [w.line for w in warned])
            new.wsizes = array("I", map(len, reasons))
            new.reasons = bytearray(b"".join(reasons))
        if len(new.stats) != 5 * count:
            raise InvalidIndex("a stat is not five numbers")
        return new

    def patched(
        self, old: Sequence[Kept], sources: Sequence[Kept], stats: dict[str, Stat], also: set[str]
    ) -> tuple[Sections, list[int]] | None:
        """A copy with the rows of ``sources`` (in order) that are not those of ``old``
        (the sources these sections were packed from), and those named in ``also``
        (their stat changed), packed anew from ``sources`` and ``stats``, and those
        rows; None when the names are not the same, or too many rows changed to be
        worth it."""
        count = len(self.names)
        if len(sources) != count or len(old) != count:
            return None
        changed = set(compress(range(count), map(operator.is_not, sources, old)))
        if len(changed) + len(also) > _PATCH_MAX:
            return None
        if also:
            where = self.rows_of()
            if not also <= where.keys():
                return None
            changed.update(map(where.__getitem__, also))
        if any(sources[k].name != self.names[k] for k in changed):
            return None
        new = self.copy()
        piece_at = list(accumulate(self.npieces, initial=0))
        serial_at = list(accumulate(self.nserials, initial=0))
        warn_at = list(accumulate(self.nwarnings, initial=0))
        # from the last row to the first: a splice moves only what follows it
        rows = sorted(changed, reverse=True)
        for k in rows:
            src = sources[k]
            new.patch(k, src, stats.get(src.name, _NO_STAT), (piece_at, serial_at, warn_at))
        return new, rows

    def patch(self, k: int, src: Kept, seen: Stat, starts: tuple[list[int], ...]) -> None:
        """Row ``k`` packed anew from ``src``; ``starts`` are where each row's pieces,
        serials and warnings start in the flat sections (still right for the rows
        before ``k``)."""
        piece_at, serial_at, warn_at = starts
        reasons = [w.reason.encode("utf-8", _SURROGATES) for w in src.warnings]
        w0, w1 = warn_at[k], warn_at[k + 1]
        r0 = sum(self.wsizes[:w0])
        self.reasons[r0 : r0 + sum(self.wsizes[w0:w1])] = b"".join(reasons)
        self.wsizes[w0:w1] = array("I", map(len, reasons))
        self.wlines[w0:w1] = array("Q", [w.line for w in src.warnings])
        self.serials[serial_at[k] : serial_at[k + 1]] = array("Q", src.serials)
        self.pieces[piece_at[k] : piece_at[k + 1]] = array("I", src.pieces)
        if len(seen) != 5:
            raise InvalidIndex("a stat is not five numbers")
        self.stats[5 * k : 5 * k + 5] = array("Q", seen)
        self.npieces[k], self.sizes[k] = len(src.pieces), src.size
        self.records[k], self.nrecords[k] = src.records, src.nrecords
        self.nserials[k], self.nwarnings[k] = len(src.serials), len(src.warnings)
        _ROW.pack_into(
            self.rows,
            _ROW.size * k,
            src.digest,
            len(src.pieces),
            src.records,
            src.nrecords,
            len(src.serials),
            src.lines,
            len(src.warnings),
        )

    def copy(self) -> Sections:
        """A copy whose sections can be patched (the names are shared: never changed)."""
        new = Sections()
        new.names, new.names_blob, new.named = self.names, self.names_blob, self.named
        for name in Sections.__slots__:
            if name not in ("names", "names_blob", "named"):
                setattr(new, name, getattr(self, name)[:])
        return new

    def encoded(
        self,
        *,
        serial: int,
        banner: int,
        pair: tuple[Stat, Stat],
        options: bytes = b"",
        code: bytes | None = None,
        pairs: bytes | memoryview = b"",
    ) -> list[bytes | bytearray | memoryview]:
        """The index, as the buffers to write one after the other (the last is the
        sha256 of all before it): each section is one buffer, written as it is."""
        sections: list[bytes | bytearray | memoryview] = [
            self.names_blob,
            self.rows,
            _le(self.stats),
            _le(self.pieces),
            _le(self.serials),
            _le(self.wlines),
            _le(self.wsizes),
            self.reasons,
        ]
        header = _HEADER.pack(
            _MAGIC,
            FORMAT,
            __version__.encode()[:16],
            code_digest() if code is None else code,
            hashlib.sha256(options).digest(),
            serial,
            banner,
            *pair[0],
            *pair[1],
            len(self.names),
            *map(len, sections),
            len(pairs),
        )
        parts: list[bytes | bytearray | memoryview] = [header, *sections, pairs]
        h = hashlib.sha256()
        for part in parts:
            h.update(part)
        parts.append(h.digest())
        return parts

    def rows_of(self) -> dict[str, int]:
        """Each name's row; made once, and shared by the copies (the names are)."""
        if not self.named:
            with no_gc():
                self.named.append(dict(zip(self.names, range(len(self.names)), strict=True)))
        return self.named[0]

    def text_length(self, width: int) -> int:
        """The length of every source's text in a ``data`` whose serial has ``width``
        digits (:meth:`Kept.text_length`, summed)."""
        return sum(self.sizes) + width * (sum(self.npieces) - len(self.names))

    def text_lengths(self, width: int) -> Iterator[int]:
        """Each source's :meth:`Kept.text_length`, in order."""
        counted = map(mul, self.npieces, repeat(width))
        return map(sub, map(add, self.sizes, counted), repeat(width))


#: Past this many changed rows, :meth:`Sections.patched` leaves it to :meth:`Sections.of`.
_PATCH_MAX = 256


def _le(values: array[int]) -> memoryview:
    """``values`` as the index stores them: little-endian bytes."""
    if _SWAP:
        values = values[:]
        values.byteswap()
    return memoryview(values).cast("B")


def decode(
    text: bytes, options: bytes = b""
) -> tuple[int, int, tuple[Stat, Stat], dict[str, Kept], dict[str, Stat], memoryview]:
    """The serial, banner length, pair's stats, sources, trusted stats and records'
    (hash, position) pairs of an index.

    Raises ValueError saying which check failed.
    """
    found = decode_sections(text, options)
    return found[:6]


def decode_sections(
    text: bytes, options: bytes = b""
) -> tuple[int, int, tuple[Stat, Stat], dict[str, Kept], dict[str, Stat], memoryview, Sections]:
    """:func:`decode`, and the index's :class:`Sections` as they were read."""
    if len(text) < _HEADER.size + 32:
        raise InvalidIndex("shorter than its header")
    body, checksum = memoryview(text)[:-32], text[-32:]
    fields = _HEADER.unpack_from(body)
    magic, version, written_by, their_code, their_options, serial, banner = fields[:7]
    if magic != _MAGIC:
        raise InvalidIndex("not a dnsmaster cache index")
    if version != FORMAT:
        raise InvalidIndex(f"cache format {version}, not {FORMAT}")
    if written_by.rstrip(b"\0") != __version__.encode()[:16] or their_code != code_digest():
        raise InvalidIndex("written by another version of dnsmaster")
    if their_options != hashlib.sha256(options).digest():
        raise InvalidIndex("written by a build with other options")
    lengths = fields[-_SECTIONS:]
    if _HEADER.size + sum(lengths) != len(body):
        raise InvalidIndex(
            f"holds {len(body)} bytes, its header says {_HEADER.size + sum(lengths)}"
        )
    if hashlib.sha256(body).digest() != checksum:
        raise InvalidIndex("sha256 does not match its contents")
    try:
        with no_gc():
            sources, stats, sections = _parse(body, fields[17], lengths[:-1])
    except (struct.error, UnicodeError, OverflowError) as exc:
        raise InvalidIndex(f"malformed: {exc}") from None
    pairs = body[len(body) - lengths[-1] :]
    if pairs and len(pairs) != 8 * sum(sections.nrecords):
        raise InvalidIndex("the records' pairs are not 8 bytes a record")
    pair = (tuple(fields[7:12]), tuple(fields[12:17]))
    return serial, banner, pair, sources, stats, pairs, sections


def _parse(
    body: memoryview, count: int, lengths: Sequence[int]
) -> tuple[dict[str, Kept], dict[str, Stat], Sections]:
    at = _HEADER.size
    sections = []
    for length in lengths:
        sections.append(body[at : at + length])
        at += length
    names_blob, rows_blob, stats_blob, pieces_blob, serials_blob, lines_blob, sizes, reasons = (
        sections
    )
    if len(rows_blob) != count * _ROW.size:
        raise InvalidIndex(f"{len(rows_blob) // _ROW.size} sources where {count} were counted")
    names = names_blob.tobytes().decode("utf-8", _SURROGATES).split("\0") if count else []
    if len(names) != count or len(set(names)) != count:
        raise InvalidIndex("the names are not one per source")
    # one column per field of the rows
    rows = list(_ROW.iter_unpack(rows_blob))
    digests, n_pieces, records, n_records, n_serials, lines, n_warnings = (
        map(list, zip(*rows, strict=True)) if rows else ([] for _ in range(7))
    )
    if count and min(n_pieces) < 1:
        raise InvalidIndex(f"{names[n_pieces.index(min(n_pieces))]}: no text")
    seen = _unints("Q", stats_blob, 5 * count)
    pieces_all = _unints("I", pieces_blob, sum(n_pieces))
    pieces = _cut(pieces_all, n_pieces)
    serials_all = _unints("Q", serials_blob, sum(n_serials))
    # An offset must leave the serial's 4 bytes inside its source's records.
    limits = chain.from_iterable(map(repeat, records, n_serials))
    if any(map(operator.gt, map(operator.add, serials_all, repeat(4)), limits)):
        for name, offsets, length in zip(names, _cut(serials_all, n_serials), records, strict=True):
            if offsets and max(offsets) + 4 > length:
                raise InvalidIndex(f"{name}: a serial offset past its records")
    serials = _cut(serials_all, n_serials)
    warned = _warnings_of(names, lines, n_warnings, (lines_blob, sizes, reasons))
    found = list(map(warned.get, names, repeat(_NONE))) if warned else repeat(_NONE)
    sums = list(map(sum, pieces))
    columns = zip(names, digests, pieces, sums, records, n_records, serials, found, lines)  # noqa: B905
    kept = list(map(tuple.__new__, repeat(Kept), columns))
    sources = dict(zip(names, kept, strict=True))
    stat_of = list(zip(*[iter(seen)] * 5, strict=True))
    trusted = map(_NO_STAT.__ne__, stat_of)
    stats = dict(compress(zip(names, stat_of, strict=True), trusted))
    packed = Sections()
    packed.names, packed.names_blob = names, bytes(names_blob)
    packed.rows = bytearray(rows_blob)
    packed.stats = array("Q", seen)
    packed.pieces, packed.npieces = array("I", pieces_all), array("I", n_pieces)
    packed.sizes = array("Q", sums)
    packed.serials, packed.nserials = array("Q", serials_all), array("I", n_serials)
    packed.records, packed.nrecords = array("Q", records), array("I", n_records)
    packed.nwarnings = array("I", n_warnings)
    packed.wlines = array("Q", _unints("Q", lines_blob, sum(n_warnings)))
    packed.wsizes = array("I", _unints("I", sizes, sum(n_warnings)))
    packed.reasons = bytearray(reasons)
    return sources, stats, packed


def _cut(values: tuple[int, ...], counts: list[int]) -> list[tuple[int, ...]]:
    """``values`` cut into one tuple per count, in order."""
    if counts and min(counts) == max(counts):  # the same shape for all: cut by zip
        n = counts[0]
        return list(zip(*[iter(values)] * n, strict=True)) if n else [()] * len(counts)
    it = iter(values)
    return list(map(tuple, map(islice, repeat(it), counts)))


def _warnings_of(
    names: list[str],
    lines: list[int],
    counts: list[int],
    blobs: tuple[memoryview, memoryview, memoryview],
) -> dict[str, tuple[DataError, ...]]:
    """Each warned source's warnings, checked against its lines; ``blobs`` are the
    sections of the warnings' lines, their reasons' lengths and the reasons."""
    lines_blob, sizes_blob, reasons = blobs
    total = sum(counts)
    at_lines = _unints("Q", lines_blob, total)
    sizes = _unints("I", sizes_blob, total)
    if sum(sizes) != len(reasons):
        raise InvalidIndex("the warnings do not add up")
    texts = reasons.tobytes()
    found: dict[str, tuple[DataError, ...]] = {}
    w = at = 0
    for k in compress(range(len(counts)), counts):
        name, n = names[k], counts[k]
        mine = []
        for line, size in zip(at_lines[w : w + n], sizes[w : w + n], strict=True):
            if line > lines[k]:
                raise InvalidIndex(f"{name}: a warning past its last line")
            mine.append(DataError(name, line, texts[at : at + size].decode("utf-8", _SURROGATES)))
            at += size
        found[name] = tuple(mine)
        w += n
    return found


def _unints(code: str, view: memoryview, count: int) -> tuple[int, ...]:
    size = struct.calcsize(code)
    if len(view) != count * size:
        raise InvalidIndex(f"{len(view) // size} numbers where {count} were counted")
    values: tuple[int, ...] = struct.unpack(f"<{count}{code}", view)
    return values
